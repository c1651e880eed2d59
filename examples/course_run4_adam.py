"""Course run 4: the Adam training script, with a validation split and no shuffling.

784-100(sigmoid)-10, PyTorch's default initialisation, cross-entropy, Adam lr 0.001, batch 128;
the first 54,000 training images train and the last 6,000 validate, in file order (no
shuffling); 10 epochs. Course: validation 96.97 % after epoch 10, test 96.35 %; per-epoch
train/validation accuracy 90.36/92.77 ... 97.14/96.97.

    python examples/course_run4_adam.py [--quick]
"""

from _common import parser, report, setup

import fastmlp
from fastmlp.datasets import load_mnist
from fastmlp.plot import plot_history

COURSE = [(90.36, 92.77), (92.53, 94.12), (93.72, 95.12), (94.55, 95.75), (95.18, 96.20),
          (95.68, 96.45), (96.15, 96.65), (96.48, 96.70), (96.84, 96.85), (97.14, 96.97)]


def main(argv=None):
    args = parser(__doc__.splitlines()[0], epochs=10).parse_args(argv)
    setup(args)
    X, y = load_mnist("train")
    test = load_mnist("test")
    train, val = (X[:54000], y[:54000]), (X[54000:], y[54000:])
    if args.quick:
        train, args.epochs = (X[:2000], y[:2000]), 1
    model = fastmlp.MLP(784, [100], 10, activation="sigmoid")
    history = fastmlp.fit(model, train, val=val, loss="cross_entropy", optimizer="adam", lr=0.001,
                          epochs=args.epochs, batch_size=128, shuffle=False, log_every=100)
    report("run 4 (Adam)", model, train, test, history)
    for e, (a, v) in enumerate(zip(history.accuracy, history.val_accuracy)):
        ref = COURSE[e] if e < len(COURSE) else (float("nan"),) * 2
        print(f"epoch {e + 1:2d}: train/validation {100 * a:.2f}/{100 * v:.2f}   course {ref[0]:.2f}/{ref[1]:.2f}")
    print("wrote", plot_history(history, args.out / "course_run4.png", title="Run 4: Adam, no shuffling"))


if __name__ == "__main__":
    main()
