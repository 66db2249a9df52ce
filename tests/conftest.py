"""Parametrises suite classes that define ``cases()`` (see ``nmsparse.testing.op_suite``)."""


def pytest_generate_tests(metafunc):
  cls = metafunc.cls
  if cls is not None and "case" in metafunc.fixturenames and hasattr(cls, "cases"):
    cases = cls.cases()
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])
