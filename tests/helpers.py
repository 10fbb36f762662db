"""Small hand-checkable graphs shared by the tests."""

from memmap.ir.graph import GraphBuilder


def chain_graph():
    """x(param,100) -> a(op0) -> y0(200) -> b(op1) -> y1(100, output); w(const,300) read by op1."""
    b = GraphBuilder("chain")
    x = b.add_value("x", 100, kind="parameter")
    w = b.add_value("w", 300, kind="constant")
    (y0,) = b.add_op("a", "add", inputs=[x], outputs=[("y0", 200)], flops=10)
    (y1,) = b.add_op("b", "dot", inputs=[y0, w], outputs=[("y1", 100)], flops=20)
    b.mark_output(y1)
    return b.build()


def diamond_graph():
    """x -> a -> u (big, read again at the end) ; a -> ... chain c, d ; e reads u and d."""
    b = GraphBuilder("diamond")
    x = b.add_value("x", 64, kind="parameter")
    (u,) = b.add_op("a", "f", inputs=[x], outputs=[("u", 256)])
    (c,) = b.add_op("c", "f", inputs=[x], outputs=[("c", 192)])
    (d,) = b.add_op("d", "f", inputs=[c], outputs=[("d", 64)])
    (e,) = b.add_op("e", "f", inputs=[u, d], outputs=[("e", 64)])
    b.mark_output(e)
    return b.build()


def residual_hlo_text(blocks: int, *, rows: int = 64, width: int = 256) -> str:
    """HLO text of a deep residual network, for tests that need a large program (about
    ``6 * blocks`` instructions; generated, so no data file is needed). Block ``k`` reads the
    running activation ``x`` (f32[rows, width]) and its own weight ``w_k`` (f32[width, width]):
    ``dot = dot(x, w)``, ``act = tanh(dot)``, ``mul = multiply(act, x)``, ``sum = add(mul,
    dot)``, then ``x = subtract(sum, x)``: ``x`` and ``dot`` stay live across the block (skip
    connections), and every fifth block also adds the activation of five blocks before."""
    act = f"f32[{rows},{width}]"
    lines = ["HloModule residual_blocks", "", "ENTRY main {", f"  x_0 = {act} parameter(0)"]
    x, history = "x_0", ["x_0"]
    for k in range(blocks):
        lines += [f"  w_{k} = f32[{width},{width}] parameter({k + 1})",
                  f"  dot_{k} = {act} dot({x}, w_{k}), lhs_contracting_dims={{1}}, rhs_contracting_dims={{0}}",
                  f"  act_{k} = {act} tanh(dot_{k})",
                  f"  mul_{k} = {act} multiply(act_{k}, {x})",
                  f"  sum_{k} = {act} add(mul_{k}, dot_{k})"]
        total = f"sum_{k}"
        if k % 5 == 4 and len(history) > 5:
            lines.append(f"  skip_{k} = {act} add(sum_{k}, {history[-5]})")
            total = f"skip_{k}"
        lines.append(f"  x_{k + 1} = {act} subtract({total}, {x})")
        x = f"x_{k + 1}"
        history.append(x)
    lines += [f"  ROOT out = {act} negate({x})", "}"]
    return "\n".join(lines) + "\n"


def one_line_error(err: str) -> str:
    """The single non-empty line of a CLI's stderr (asserts there is one and no traceback)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]
