"""Dead ReLUs: the share of hidden units that output 0 for every input, during training.

A ReLU unit whose pre-activation is negative for every sample gets no gradient and never
recovers. Too large a learning rate pushes many units there. 784-256-256-10 ReLU MLP on
10,000 MNIST images, plain SGD at several learning rates; after each epoch, the share of dead
units over 2,000 probe images is measured (a unit silent on the probe images may still fire on
a few training images, so some come back). Writes the share against the epoch.

    python examples/dead_relu.py [--epochs 10]
"""

import numpy as np
from _common import parser, setup

import fastmlp
from fastmlp.datasets import load_mnist
from fastmlp.plot import plot_curves


def dead_share(model, X) -> float:
    """Fraction of the hidden ReLU units that are 0 on every row of ``X`` (layer by layer,
    so each ReLU's output is seen)."""
    dead = total = 0
    h = X
    for layer in model.layers[:-1]:
        h = layer.forward(h)
        if isinstance(layer, fastmlp.ReLU):
            out = model.backend.to_numpy(h)
            dead += int(np.sum(np.all(out == 0, axis=0)))
            total += out.shape[1]
    return dead / total


class DeadUnits(fastmlp.Callback):
    def __init__(self, probe):
        self.probe, self.shares = probe, []

    def on_epoch_end(self, epoch, logs, state):
        self.shares.append(100 * dead_share(state.model, self.probe))


def main(argv=None):
    args = parser(__doc__.splitlines()[0], epochs=10).parse_args(argv)
    setup(args)
    X, y = load_mnist("train")
    n = 1000 if args.quick else 10000
    train, probe = (X[:n], y[:n]), X[50000:52000]
    epochs = 1 if args.quick else args.epochs
    curves = {}
    for lr in (0.01, 0.1, 0.5, 1.0):
        model = fastmlp.MLP(784, [256, 256], 10, rng=args.seed)
        cb = DeadUnits(probe)
        cb.shares.append(100 * dead_share(model, probe))
        try:
            hist = fastmlp.fit(model, train, optimizer="sgd", lr=lr, epochs=epochs, batch_size=64, seed=args.seed,
                               verbose=0, callbacks=[cb], eval_train=False)
            note = f"final cost {hist.loss[-1]:.3f}"
        except FloatingPointError as exc:  # a learning rate this large may diverge: say so
            note = f"diverged ({exc})"
        curves[f"lr {lr}"] = cb.shares + [cb.shares[-1]] * (epochs + 1 - len(cb.shares))
        print(f"lr {lr:5}: dead units {cb.shares[0]:.1f}% at start -> {cb.shares[-1]:.1f}%, {note}")
    print("wrote", plot_curves(range(epochs + 1), curves, args.out / "dead_relu.png", xlabel="epoch",
                               ylabel="dead ReLU units (%)", title="Dead ReLU units during training"))


if __name__ == "__main__":
    main()
