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


def one_line_error(err: str) -> str:
    """The single non-empty line of a CLI's stderr (asserts there is one and no traceback)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]
