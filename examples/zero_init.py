"""What if every weight starts at 0? The course's question, answered on MNIST.

With all weights equal, every hidden unit computes the same function and receives the same
gradient, so the units stay identical for ever (the symmetry is never broken): the network
behaves as if it had one hidden unit. Random initialisation breaks the symmetry.

784-64(sigmoid)-10, cross-entropy, SGD lr 0.1, batch 100, on the first 10,000 training images.
Prints the accuracies and how many distinct hidden units each network ends with.

    python examples/zero_init.py [--epochs 10]
"""

import numpy as np
from _common import parser, setup

import fastmlp
from fastmlp.datasets import load_mnist
from fastmlp.plot import plot_curves


def main(argv=None):
    args = parser(__doc__.splitlines()[0], epochs=10).parse_args(argv)
    setup(args)
    X, y = load_mnist("train")
    n = 1000 if args.quick else 10000
    train, test = (X[:n], y[:n]), load_mnist("test")
    epochs = 1 if args.quick else args.epochs
    curves = {}
    for name in ("all zeros", "random (PyTorch default)"):
        model = fastmlp.MLP(784, [64], 10, activation="sigmoid", rng=args.seed)
        if name == "all zeros":
            for p in model.parameters():
                fastmlp.init.zeros_(p)
        hist = fastmlp.fit(model, train, optimizer="sgd", lr=0.1, epochs=epochs, batch_size=100,
                           seed=args.seed, verbose=0)
        W = model.state_dict()["0.weight"]
        distinct = len(np.unique(W.round(6), axis=0))
        print(f"{name:>25}: test accuracy {100 * fastmlp.accuracy(model, test):5.2f}%, "
              f"distinct hidden units {distinct} of {W.shape[0]}")
        curves[name] = hist.train_loss
    print("wrote", plot_curves(range(1, epochs + 1), curves, args.out / "zero_init.png", xlabel="epoch",
                               ylabel="training cross-entropy", title="All-zero versus random initialisation"))


if __name__ == "__main__":
    main()
