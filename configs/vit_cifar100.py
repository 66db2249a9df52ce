"""vit on CIFAR-100: the CIFAR-10 config (same schedule) with 100 classes.

Data: ./data/cifar100/{train,test}_{images,labels}.npy (uint8 NHWC, integer labels); CIFAR-100 is not
provided in shared/data, so this runs where users bring it.
Command:
  python -m experiments.main --config configs/vit_cifar100.py --workdir runs/vit_c100 \
      --config.method=bdwp --config.pattern=2:8 --config.data.data_dir=./data
Expected test accuracy: not yet measured. Runtime: not yet measured.
"""

from configs import base, vit_cifar10


def get_config(arg: str | None = None):
  return base.cifar100(vit_cifar10.get_config(arg))
