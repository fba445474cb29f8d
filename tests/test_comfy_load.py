"""The pack loads into a real ComfyUI and its nodes are served in /object_info."""
import numpy as np
import pytest

FACE_STACK_NODES = ["DenseFacePoseEuler", "DenseFaceCropMask", "DenseFacePasteBack", "DenseFaceAnnotationTargets"]


def test_pack_loads_in_process(comfy):
    for name in FACE_STACK_NODES:
        assert name in comfy.nodes.NODE_CLASS_MAPPINGS, name
        cls = comfy.nodes.NODE_CLASS_MAPPINGS[name]
        assert "required" in cls.INPUT_TYPES()
        assert len(cls.RETURN_TYPES) >= 1
    # model folders are registered with ComfyUI
    for folder in ("dense_face", "mediapipe", "insightface"):
        assert folder in comfy.folder_paths.folder_names_and_paths


def test_pose_node_matches_core(comfy):
    (img,) = comfy.node("DenseFacePoseEuler").draw(yaw=30.0, pitch=-10.0, roll=5.0)
    assert tuple(img.shape) == (1, 256, 256, 3)
    ref = comfy.core.pose.draw_pose_image(30.0, -10.0, 5.0)
    assert np.array_equal((img[0].numpy() * 255).round().astype(np.uint8), ref)


@pytest.mark.server
def test_nodes_in_server_object_info(tmp_path):
    from comfy_harness import ComfyServer

    server = ComfyServer(tmp_path)
    try:
        server.wait_ready()
        info = server.get_json("/object_info")
        for name in FACE_STACK_NODES:
            assert name in info, f"{name} missing from /object_info; log:\n{server.log()[-3000:]}"
            assert info[name]["category"].startswith("Dense-Face")
        assert f"Cannot import {server.root / 'custom_nodes' / 'ComfyUI-Dense-Face'}" not in server.log()
    finally:
        server.stop()
