"""Channel plans of the two architectures: which channels must be removed together (decision D10).

SegNet-MTAN (``f[j]`` = encoder widths, ``t`` = every task):

- ``enc{j}.first``: ``encoder_block[j]``, read by ``conv_block_enc[j]`` and by ``encoder_att[t][j]`` (its first
  input part);
- ``stage{j}``, one coupled group per encoder stage: the output of ``conv_block_enc[j]``, which is multiplied by
  ``encoder_att[t][j]``'s masks, max-pooled with indices, and whose indices unpool the decoder tensor of stage
  ``j``; that decoder tensor is the output of ``conv_block_dec[j+1]``, multiplied by ``decoder_att[t][j+1]``'s
  masks. Readers: ``encoder_block_att[j]``, ``encoder_block[j+1]``, ``decoder_block[j]``, the first input part of
  ``decoder_att[t][j]`` and ``decoder_block_att[j]`` (j < 4). ``dec0.out`` is the same for the last decoder stage
  (``conv_block_dec[0]`` and ``decoder_att[t][0]``'s masks, read by the heads);
- ``encatt{j}`` / ``decatt{k}``: the shared attention convs, read by the next attention module (second input part)
  or by ``decoder_block_att[4]``;
- internal groups of the conv stacks, and every attention module's hidden layer;
- not prunable: the input image, the heads (no BN and no ReLU in the first conv; the output conv is never pruned).

DeepLab-ResNet-34: a stage's residual chain is one group (the stem, every block's ``bn2`` and the stage's
shortcut write it; a stage without shortcut continues the previous chain); every block's inner channels; the ASPP
hidden layers (no BN: HRank only). The ASPP output convs are not prunable.

Any other model: ``channel_plan`` derives the plan from Torch-Pruning's dependency graph
(``mtlx_core.prune.derived_plan``); ``tests/test_derived_plan.py`` checks the DeepLab plan against the derived one.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from mtlx_core.models.deeplab import DeepLabResNet34
from mtlx_core.models.segnet_mtan import SegNetMTAN
from mtlx_core.prune.channels import ChannelGroup, ChannelPlan, Producer

logger = logging.getLogger(__name__)

INPUT = "input"


class _PlanBuilder:
    def __init__(self, model: nn.Module) -> None:
        self.modules = dict(model.named_modules())
        self.groups: dict[str, ChannelGroup] = {INPUT: ChannelGroup(INPUT, 3, prunable=False)}
        self.inputs: dict[str, tuple[str, ...]] = {}

    def group(self, name: str, producers: list[Producer], ranks: list[str] | None = None,
              prunable: bool = True) -> str:
        size = self.modules[producers[0].conv].out_channels
        self.groups[name] = ChannelGroup(name, size, list(producers), list(ranks or []), prunable)
        return name

    def add(self, name: str, producer: Producer, rank: str | None = None) -> None:
        self.groups[name].producers.append(producer)
        if rank is not None:
            self.groups[name].rank_sources.append(rank)

    def reads(self, conv: str, *groups: str) -> None:
        self.inputs[conv] = tuple(groups)

    def plan(self) -> ChannelPlan:
        return ChannelPlan(self.groups, self.inputs)


def _cbr(prefix: str) -> Producer:
    """``conv_bn_relu`` Sequential: conv ``.0``, BN ``.1`` (ReLU ``.2``)."""
    return Producer(f"{prefix}.0", f"{prefix}.1")


def _mask(prefix: str) -> Producer:
    """Attention mask output (conv ``.3``, BN ``.4`` before the sigmoid): tied to the feature it multiplies."""
    return Producer(f"{prefix}.3", f"{prefix}.4", tied=True)


def _stack(b: _PlanBuilder, prefix: str, depth: int, first_input: str) -> str:
    """Internal groups of a conv stack; returns its last conv's prefix (its output group is the caller's)."""
    src = first_input
    for i in range(depth - 1):
        b.reads(f"{prefix}.{i}.0", src)
        src = b.group(f"{prefix}.{i}", [_cbr(f"{prefix}.{i}")], [f"{prefix}.{i}.2"])
    b.reads(f"{prefix}.{depth - 1}.0", src)
    return f"{prefix}.{depth - 1}"


def _attention_hidden(b: _PlanBuilder, prefix: str, *inputs: str) -> None:
    b.reads(f"{prefix}.0", *inputs)
    b.group(f"{prefix}.hidden", [Producer(f"{prefix}.0", f"{prefix}.1")], [f"{prefix}.2"])
    b.reads(f"{prefix}.3", f"{prefix}.hidden")


def _n_children(module: nn.Module) -> int:
    """Length of a container module (a Sequential or ModuleList, typed as a plain Module by its parent)."""
    return sum(1 for _ in module.children())


def segnet_mtan_plan(model: SegNetMTAN) -> ChannelPlan:
    """Channel plan of ``SegNetMTAN`` (any task subset); see the module docstring."""
    b = _PlanBuilder(model)
    tasks = model.task_names
    depth = [_n_children(s) for s in model.conv_block_enc]
    prev = INPUT
    for j in range(5):  # encoder
        b.reads(f"encoder_block.{j}.0", prev)
        first = b.group(f"enc{j}.first", [_cbr(f"encoder_block.{j}")], [f"encoder_block.{j}.2"])
        last = _stack(b, f"conv_block_enc.{j}", depth[j], first)
        stage = b.group(f"stage{j}", [_cbr(last)], [f"{last}.2"])
        for t in tasks:
            b.add(stage, _mask(f"encoder_att.{t}.{j}"))
        b.reads(f"encoder_block_att.{j}.0", stage)
        b.group(f"encatt{j}", [_cbr(f"encoder_block_att.{j}")], [f"encoder_block_att.{j}.2"])
        for t in tasks:
            _attention_hidden(b, f"encoder_att.{t}.{j}", *([first] if j == 0 else [first, f"encatt{j - 1}"]))
        prev = stage
    dec_depth = [_n_children(s) for s in model.conv_block_dec]
    for k in range(4, -1, -1):  # decoder: stage{k} (the unpooled tensor) is read at step k
        b.reads(f"decoder_block.{k}.0", f"stage{k}")
        first = b.group(f"dec{k}.first", [_cbr(f"decoder_block.{k}")], [f"decoder_block.{k}.2"])
        last = _stack(b, f"conv_block_dec.{k}", dec_depth[k], first)
        out = f"stage{k - 1}" if k > 0 else b.group("dec0.out", [_cbr(last)], [f"{last}.2"])
        if k > 0:
            b.add(out, _cbr(last), f"{last}.2")
        for t in tasks:
            b.add(out, _mask(f"decoder_att.{t}.{k}"))
        b.reads(f"decoder_block_att.{k}.0", "encatt4" if k == 4 else f"stage{k}")
        b.group(f"decatt{k}", [_cbr(f"decoder_block_att.{k}")], [f"decoder_block_att.{k}.2"])
        for t in tasks:
            _attention_hidden(b, f"decoder_att.{t}.{k}", f"stage{k}", f"decatt{k}")
    for t in tasks:
        b.reads(f"heads.{t}.0", "dec0.out")
        b.group(f"heads.{t}.hidden", [Producer(f"heads.{t}.0")], prunable=False)
        b.reads(f"heads.{t}.1", f"heads.{t}.hidden")
        b.group(f"heads.{t}.out", [Producer(f"heads.{t}.1")], prunable=False)
    plan = b.plan()
    plan.check(model)
    return plan


def deeplab_plan(model: DeepLabResNet34) -> ChannelPlan:
    """Channel plan of ``DeepLabResNet34``; see the module docstring."""
    b = _PlanBuilder(model)
    b.reads("backbone.conv1", INPUT)
    chain = b.group("stem", [Producer("backbone.conv1", "backbone.bn1")], ["backbone.relu"])
    for s, stage in enumerate(model.backbone.blocks):
        prev_chain = chain
        blocks = list(stage.children())  # the stage's BasicBlocks
        if getattr(blocks[0], "downsample", None) is not None:
            ds = f"backbone.blocks.{s}.0.downsample"
            b.reads(f"{ds}.0", prev_chain)
            chain = b.group(f"res{s}", [Producer(f"{ds}.0", f"{ds}.1")])
        for i in range(len(blocks)):
            blk = f"backbone.blocks.{s}.{i}"
            b.reads(f"{blk}.conv1", prev_chain if i == 0 else chain)
            mid = b.group(f"{blk}.mid", [Producer(f"{blk}.conv1", f"{blk}.bn1")], [f"{blk}.relu"])
            b.reads(f"{blk}.conv2", mid)
            b.add(chain, Producer(f"{blk}.conv2", f"{blk}.bn2"), f"{blk}.out_relu")
    for t in model.task_names:
        for r in range(_n_children(model.heads[t])):
            br = f"heads.{t}.{r}"
            b.reads(f"{br}.conv1", chain)
            b.group(f"{br}.hidden1", [Producer(f"{br}.conv1")], [f"{br}.relu1"])
            b.reads(f"{br}.conv2", f"{br}.hidden1")
            b.group(f"{br}.hidden2", [Producer(f"{br}.conv2")], [f"{br}.relu2"])
            b.reads(f"{br}.conv3", f"{br}.hidden2")
            b.group(f"{br}.out", [Producer(f"{br}.conv3")], prunable=False)
    plan = b.plan()
    plan.check(model)
    return plan


def channel_plan(model: nn.Module, example_input: torch.Tensor | None = None) -> ChannelPlan:
    """The channel plan of a model (pruned or not: sizes are read from its layers).

    SegNet-MTAN and DeepLab have hand-written plans; any other model's plan is derived from Torch-Pruning's
    dependency graph (``mtlx_core.prune.derived_plan``), traced on ``example_input`` (default: a zero RGB image
    whose side is a multiple of the model's ``input_multiple``).
    """
    if isinstance(model, SegNetMTAN):
        return segnet_mtan_plan(model)
    if isinstance(model, DeepLabResNet34):
        return deeplab_plan(model)
    from mtlx_core.prune.derived_plan import default_example_input, derive_channel_plan

    return derive_channel_plan(model, default_example_input(model) if example_input is None else example_input)
