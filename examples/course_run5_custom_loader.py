"""Course run 5: the custom CSV + PNG data loader (needs ``../shared/data`` beside the repo).

784-100(sigmoid)-10, default initialisation, cross-entropy, SGD lr 0.1, batch 64 shuffled with
drop_last (4 steps an epoch), 100 epochs, on the course's 256/256/256 PNG subset read through
``CSVImageDataset``. Course: train 91.80 %, valid 74.61 %, test 75.00 %.

    python examples/course_run5_custom_loader.py [--data ../shared/data/stat453-L09-custom-dataloader]
"""

from pathlib import Path

from _common import parser, setup

import fastmlp
from fastmlp.data import Compose, CSVImageDataset, DataLoader, Flatten, ToFloat
from fastmlp.plot import plot_history

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "stat453-L09-custom-dataloader"


def main(argv=None):
    p = parser(__doc__.splitlines()[0], epochs=100)
    p.add_argument("--data", type=Path, default=DEFAULT)
    args = p.parse_args(argv)
    setup(args)
    if not args.data.is_dir():
        raise SystemExit(f"the course's loader subset is not at {args.data}; pass --data")
    t = Compose([ToFloat(), Flatten()])
    train, valid, test = (CSVImageDataset(args.data / f"mnist_{s}.csv", args.data / f"mnist_{s}", transform=t,
                                          cache=True) for s in ("train", "valid", "test"))
    loader = DataLoader(train, batch_size=64, shuffle=True, drop_last=True, seed=args.seed)
    model = fastmlp.MLP(784, [100], 10, activation="sigmoid")
    epochs = 2 if args.quick else args.epochs
    history = fastmlp.fit(model, loader, val=valid, optimizer="sgd", lr=0.1, epochs=epochs, log_every=0)
    print(f"run 5: train {100 * history.accuracy[-1]:.2f}%, valid {100 * history.val_accuracy[-1]:.2f}%, "
          f"test {100 * fastmlp.accuracy(model, test):.2f}%  (course 91.80 / 74.61 / 75.00)")
    print("wrote", plot_history(history, args.out / "course_run5.png", title="Run 5: custom CSV + PNG loader"))


if __name__ == "__main__":
    main()
