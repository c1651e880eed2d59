"""Under- and over-fitting as the hidden width sweeps (the course's bias/variance picture).

One hidden ReLU layer of 1 to 512 units, trained to convergence (Adam, 150 epochs) on a small
MNIST subset (1,000 images, 20 % of their labels replaced at random, so that fitting the
training set means memorising noise). Narrow networks underfit: training and test error both
high (bias). From about 16-64 units the training error reaches zero (the interpolation
threshold) while the test error stalls far above it (variance: the noise is memorised). Wider
still, the test error falls again, the over-parameterised regime of the course's "deep double
descent" slide. Writes training and test error against capacity.

    python examples/capacity_sweep.py [--epochs 150] [--noise 0.2]
"""

import numpy as np
from _common import parser, setup

import fastmlp
from fastmlp.datasets import load_mnist
from fastmlp.plot import plot_curves


def main(argv=None):
    p = parser(__doc__.splitlines()[0], epochs=150)
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--noise", type=float, default=0.2, help="share of training labels replaced at random")
    args = p.parse_args(argv)
    setup(args)
    X, y = load_mnist("train")
    X_test, y_test = load_mnist("test")
    rng = np.random.default_rng(args.seed)
    n = 200 if args.quick else args.train_size
    X, y = X[:n], y[:n].copy()
    flip = rng.random(n) < args.noise
    y[flip] = rng.integers(0, 10, flip.sum())
    widths = [1, 4, 16] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    epochs = 3 if args.quick else args.epochs
    train_err, test_err = [], []
    for w in widths:
        model = fastmlp.MLP(784, [w], 10, rng=args.seed)
        fastmlp.fit(model, (X, y), optimizer="adam", lr=1e-3, epochs=epochs, batch_size=50, seed=args.seed,
                    verbose=0, eval_train=False)
        train_err.append(100 * (1 - fastmlp.accuracy(model, (X, y))))
        test_err.append(100 * (1 - fastmlp.accuracy(model, (X_test, y_test))))
        print(f"width {w:4d}: training error {train_err[-1]:5.1f}%, test error {test_err[-1]:5.1f}%")
    print("wrote", plot_curves(widths, {"training error": train_err, "test error": test_err},
                               args.out / "capacity_sweep.png", xlabel="hidden units (capacity)",
                               ylabel="error (%)", logx=True,
                               title=f"{n} MNIST images, {100 * args.noise:.0f}% noisy labels"))


if __name__ == "__main__":
    main()
