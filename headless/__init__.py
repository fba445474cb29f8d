"""ComfyUI without its UI: find and import a ComfyUI, run workflows in process or on servers.

This floor imports the core and ComfyUI; it reaches the pack's nodes only through
ComfyUI's own custom-node loader, never by importing ``nodes/``.
"""
