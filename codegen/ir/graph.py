"""The IR graph: typed layer nodes in topological order, from the input pixels to the class."""

from __future__ import annotations

from dataclasses import dataclass, field

from .nodes import Argmax, InstaPReLU, InstaThreshold, IRError, Node, PixelInput, TensorType

__all__ = ["Graph"]


@dataclass(frozen=True, eq=False)
class Graph:
    """A lowered model: nodes in topological order, from one :class:`PixelInput` to one :class:`Argmax`.

    Attributes
    ----------
    model : str
        Zoo name of the model.
    config : dict
        The model's configuration (``ModelConfig`` fields), for the record.
    nodes : tuple of Node
        Topological order; names unique.
    types : dict
        Output :class:`TensorType` of every node (computed).
    """

    model: str
    config: dict
    nodes: tuple[Node, ...]
    types: dict[str, TensorType] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        types: dict[str, TensorType] = {}
        for node in self.nodes:
            if not isinstance(node, Node):
                raise IRError(f"graph nodes must be IR nodes, not {type(node).__name__}")
            if node.name in types:
                raise IRError(f"node name {node.name!r} is used twice")
            missing = [i for i in node.inputs if i not in types]
            if missing:
                raise IRError(f"{node.name}: inputs {missing} are not produced by an earlier node")
            types[node.name] = node.infer([types[i] for i in node.inputs])
        object.__setattr__(self, "types", types)
        inputs = [n for n in self.nodes if isinstance(n, PixelInput)]
        outputs = [n for n in self.nodes if isinstance(n, Argmax)]
        if len(inputs) != 1 or self.nodes[0] is not inputs[0]:
            raise IRError("a graph starts with its one PixelInput")
        if len(outputs) != 1 or self.nodes[-1] is not outputs[0]:
            raise IRError("a graph ends with its one Argmax")
        for node in self.nodes:
            if isinstance(node, InstaPReLU):
                source = self.node(node.inputs[1])
                if not isinstance(source, InstaThreshold) or not source.emit_stats or source.stats != node.stats:
                    raise IRError(
                        f"{node.name}: its statistics must come from an InstaThreshold with emit_stats and the "
                        f"same stats {node.stats}"
                    )
        unused = [n.name for n in self.nodes[:-1] if not self.consumers(n.name)]
        if unused:
            raise IRError(f"nodes {unused} feed nothing")

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def consumers(self, name: str) -> list[Node]:
        """Nodes that read ``name``'s output, in graph order."""
        return [n for n in self.nodes if name in n.inputs]

    @property
    def input(self) -> PixelInput:
        return self.nodes[0]

    @property
    def output(self) -> Argmax:
        return self.nodes[-1]

    @property
    def logits(self) -> str:
        """Name of the node whose output is the logits."""
        return self.output.inputs[0]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.types[self.input.name].shape

    @property
    def num_classes(self) -> int:
        return self.types[self.logits].channels

    def in_types(self, node: Node) -> list[TensorType]:
        return [self.types[i] for i in node.inputs]
