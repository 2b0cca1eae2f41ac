"""`gradcheck explain`: the derivation with the sample's own numbers, as the sources write it."""

from __future__ import annotations


def test_the_first_worked_example_shows_every_step_with_its_numbers(gradcheck):
    run = gradcheck("explain", "--logits", "1.1,2.2,0.2,-1.7", "--labels", "2")
    assert run.exit_code == 0, run
    lines = [line.strip() for line in run.stdout.splitlines()]
    for expected in (
        "s_0 = 0.333 / 1.49 = 0.224",
        "s_1 = 1.00 / 1.49 = 0.672",
        "s_2 = 0.135 / 1.49 = 0.0909",
        "s_3 = 0.0202 / 1.49 = 0.0136",
        "∂s_0/∂z_1 = −s_0·s_1 = −0.224×0.672 = −0.150",
        "∂s_0/∂z_0 = s_0(1 − s_0) = 0.224×0.776 = 0.174",
        "L = −(1.00·log 0.0909) = 2.40",
        "∂L/∂z_2 = 0.0909 − 1.00 = −0.909",
    ):
        assert expected in lines, f"{expected!r} missing from\n{run.stdout}"


def test_second_worked_example_and_a_chosen_row(gradcheck):
    run = gradcheck("explain", "--logits", "5,0,0", "--logits", "1,2,3", "--labels", "0,1", "--row", "1")
    assert run.exit_code == 0, run
    assert "Sample 1" in run.stdout
    for expected in ("s_0 = 0.135 / 1.50 = 0.0900", "s_1 = 0.368 / 1.50 = 0.245", "s_2 = 1.00 / 1.50 = 0.665"):
        assert expected in run.stdout, run.stdout


def test_soft_targets_use_the_general_gradient(gradcheck):
    run = gradcheck("explain", "--logits", "1,2,3", "--targets", "0.5,0.5,1")
    assert "∂L/∂z_j = s_j·Σ_i y_i − y_j (here Σ_i y_i = 2.00)" in run.stdout, run.stdout


def test_plain_text_off_a_terminal(gradcheck):
    run = gradcheck("explain", "--logits", "1,2,3", "--labels", "0")
    assert "\x1b[" not in run.stdout


def test_a_row_past_the_end_is_an_input_error(gradcheck):
    run = gradcheck("explain", "--logits", "1,2,3", "--labels", "0", "--row", "1")
    assert run.exit_code == 2, run
    assert "--row 1: the input has 1 row (0 to 0)" in run.stderr


def test_wide_rows_list_the_diagonal_only_past_the_first_rows(gradcheck):
    run = gradcheck("explain", "--logits", ",".join(str(v) for v in range(10)), "--labels", "3")
    jacobian_lines = [line for line in run.stdout.splitlines() if line.strip().startswith("∂s_")]
    assert len(jacobian_lines) == 2 * 10 + 8
    assert "rows 2 to 9 show only their diagonal" in run.stdout


def test_the_squared_error_derivation_comes_from_the_loss_registry(gradcheck):
    """--loss mse: L = 1/2 sum (s - t)^2 and its vector-Jacobian product, numbers from an independent sum."""
    import numpy as np

    run = gradcheck("explain", "--logits", "1,2,3", "--targets", "0.2,0.3,0.5", "--loss", "mse")
    assert run.exit_code == 0, run
    z, t = np.array([1.0, 2.0, 3.0]), np.array([0.2, 0.3, 0.5])

    def loss(v):
        s = np.exp(v) / np.exp(v).sum()
        return 0.5 * ((s - t) ** 2).sum()

    h = 1e-6
    gradient = [(loss(z + h * e) - loss(z - h * e)) / (2 * h) for e in np.eye(3)]
    assert f"= {f'{loss(z):#.3g}'}" in run.stdout
    for j, value in enumerate(gradient):
        line = next(line for line in run.stdout.splitlines() if line.strip().startswith(f"∂L/∂z_{j} ="))
        assert line.endswith(f"{value:#.3g}".replace("-", "−")), line
    assert "Squared error" in run.stdout and "Cross-entropy" not in run.stdout


def test_explain_refuses_an_option_its_loss_does_not_take(gradcheck):
    run = gradcheck("explain", "--logits", "1,2,3", "--targets", "0.2,0.3,0.5", "--loss", "mse", "--weights", "1,1,1")
    assert run.exit_code == 2 and "apply to cross_entropy, not mse" in run.stderr, run
