"""Course run 1: a sigmoid MLP trained with the mean squared error on one-hot targets.

784-100(sigmoid)-10(sigmoid), weights N(0, 0.1), biases 0, MSE (mean over the batch and the
10 outputs), SGD lr 0.1, batch 100 shuffled, 100 epochs. Course: train 90.79 %, test 91.32 %.

    python examples/course_run1_sigmoid_mse.py            # the full 100 epochs
    python examples/course_run1_sigmoid_mse.py --quick    # a smoke run
"""

from _common import course_fit, course_init, mnist, parser, report, setup

import fastmlp
from fastmlp.plot import plot_history


def main(argv=None):
    args = parser(__doc__.splitlines()[0], epochs=100).parse_args(argv)
    setup(args)
    train, test = mnist(args, one_hot=True)
    model = course_init(fastmlp.MLP(784, [100], 10, activation="sigmoid", output_activation="sigmoid"), args.seed)
    history = course_fit(model, train, "mse", args, "course_run1.npz")
    report("run 1 (sigmoid + MSE)", model, train, test, history)
    print("per-epoch training MSE (first 5):", [round(v, 4) for v in history.train_loss[:5]],
          "course: 0.0881 0.0852 0.0812 0.0763 0.0709")
    print("wrote", plot_history(history, args.out / "course_run1.png", title="Run 1: sigmoid + MSE"))


if __name__ == "__main__":
    main()
