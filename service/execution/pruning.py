"""Graphs cut down to the outputs a batch needs, for output-selective execution.

ONNX Runtime computes every node of a session whatever outputs `run` is asked for (measured with 1.32: a branch of 20
MatMuls costs the same asked or not), so "compute only what was asked" needs a second session over a smaller graph.
`prune` keeps the nodes the wanted outputs depend on (a backward walk), every graph input (the feed stays the same),
and only the initializers and value_info those nodes use.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import onnx


def _used_names(node: onnx.NodeProto) -> Iterable[str]:
    """A node's inputs, and the outer-scope names its subgraphs (If, Loop, Scan) read, which are inputs too."""
    yield from (name for name in node.input if name)
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.HasField("g") else list(attribute.graphs)
        for graph in graphs:
            for inner in graph.node:
                yield from _used_names(inner)


def prune(model: onnx.ModelProto, outputs: Collection[str]) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` computing only `outputs` (graph order kept), and how many nodes it kept."""
    graph = model.graph
    needed = set(outputs)
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):  # ONNX graphs are topologically sorted: producers come before consumers
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(_used_names(node))
    kept.reverse()
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)  # opsets, IR version, metadata; the graph is rebuilt below
    del pruned.graph.node[:], pruned.graph.output[:], pruned.graph.initializer[:], pruned.graph.value_info[:]
    pruned.graph.node.extend(kept)
    pruned.graph.output.extend(o for o in graph.output if o.name in outputs)
    pruned.graph.initializer.extend(t for t in graph.initializer if t.name in needed)
    pruned.graph.value_info.extend(v for v in graph.value_info if v.name in needed)
    return pruned, len(kept)
