"""The tabs of a member's workspace, one module each; `frontend/workspace/ui.py` composes them.

Each tab builds its own components inside the Blocks (`build`) and wires its own callbacks
(`wire`); what several tabs share (the language, the translated labels, the model lists)
belongs to the `Workspace` that holds them:

* `txt2img.py`, `img2img.py`: the generation forms (`generation.py`), with a ControlNet panel;
* `beautiful_prompt.py`: prompt expansion on the workers (the `beautiful-prompt` extension);
* `gallery.py`: the member's own images;
* `pnginfo.py`: the parameters stored in a PNG, sent to txt2img;
* `extensions.py`: per-member on/off of the platform's extensions;
* `settings.py`: interface language and face restoration defaults.

Each tab has its id (`frontend/workspace/tab_ids.py`); operators hide tabs by id, and
`base.callback` refuses a hidden tab's functions at call time.
"""
