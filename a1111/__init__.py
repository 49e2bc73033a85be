"""The A1111 vocabulary, pure: requests, fields, prompts, samplers, infotext, PNG info, ControlNet units and the name tables (no Django, no torch/diffusers/cv2)."""
