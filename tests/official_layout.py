"""The authors' pose-branch tensor names and shapes, written out by hand from
official-code-facts section 8 and the ldm ResBlock layout: the independent oracle that the
core's module and the checkpoint converter are both checked against."""
from __future__ import annotations


def pose_branch_shapes() -> dict[str, tuple[int, ...]]:
    """Written out from official-code-facts section 8 and the ldm ResBlock layout."""
    e: dict[str, tuple[int, ...]] = {}

    def conv(name, cout, cin, k):
        e[f"{name}.weight"], e[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        e[f"{name}.weight"], e[f"{name}.bias"] = (c,), (c,)

    def resblock(name, cin, cout):
        norm(f"{name}.in_layers.0", cin)
        conv(f"{name}.in_layers.2", cout, cin, 3)
        e[f"{name}.emb_layers.1.weight"], e[f"{name}.emb_layers.1.bias"] = (
            (cout, 1280),
            (cout,),
        )
        norm(f"{name}.out_layers.0", cout)
        conv(f"{name}.out_layers.3", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.skip_connection", cout, cin, 1)

    e["time_embed.0.weight"], e["time_embed.0.bias"] = (1280, 320), (1280,)
    e["time_embed.2.weight"], e["time_embed.2.bias"] = (1280, 1280), (1280,)
    hint = [
        (16, 3),
        (16, 16),
        (32, 16),
        (32, 32),
        (96, 32),
        (96, 96),
        (256, 96),
        (320, 256),
    ]
    for i, (co, ci) in enumerate(hint):
        conv(f"input_hint_block.{2 * i}", co, ci, 3)
    conv("input_blocks.0.0", 320, 4, 3)
    for n, ci, co in [
        (1, 320, 320),
        (2, 320, 320),
        (4, 320, 640),
        (5, 640, 640),
        (7, 640, 1280),
        (8, 1280, 1280),
        (10, 1280, 1280),
        (11, 1280, 1280),
    ]:
        resblock(f"input_blocks.{n}.0", ci, co)
    for n, c in [(3, 320), (6, 640), (9, 1280)]:
        conv(f"input_blocks.{n}.0.op", c, c, 3)
    resblock("middle_block.0", 1280, 1280)
    resblock("middle_block.1", 1280, 1280)
    for i, c in enumerate([320] * 4 + [640] * 3 + [1280] * 5):
        conv(f"zero_convs.{i}.0", c, c, 1)
    conv("middle_block_out.0", 1280, 1280, 1)
    return e
