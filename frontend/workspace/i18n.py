"""Interface strings of the workspace (and the home page) in each supported language (pure).

`text(language, key)` returns the string, falling back to English for a missing translation.
A member's language is `WorkspacePreferences.language`, set from the workspace's Settings tab
or the home page.
"""

from __future__ import annotations

LANGUAGES = ("en", "ja")
LANGUAGE_NAMES = {"en": "English", "ja": "日本語"}

STRINGS: dict[str, dict[str, str]] = {
    "title": {"en": "Atelier workspace", "ja": "Atelier ワークスペース"},
    "home": {"en": "Home", "ja": "ホーム"},
    "checkpoint": {"en": "Stable Diffusion checkpoint", "ja": "Stable Diffusion チェックポイント"},
    "vae": {"en": "SD VAE", "ja": "SD VAE"},
    "refresh": {"en": "Refresh models", "ja": "モデルを再読み込み"},
    "tab_txt2img": {"en": "txt2img", "ja": "txt2img"},
    "tab_img2img": {"en": "img2img", "ja": "img2img"},
    "tab_gallery": {"en": "Gallery", "ja": "ギャラリー"},
    "tab_pnginfo": {"en": "PNG Info", "ja": "PNG 情報"},
    "tab_extensions": {"en": "Extensions", "ja": "拡張機能"},
    "tab_settings": {"en": "Settings", "ja": "設定"},
    "prompt": {"en": "Prompt", "ja": "プロンプト"},
    "negative_prompt": {"en": "Negative prompt", "ja": "ネガティブプロンプト"},
    "styles": {"en": "Styles", "ja": "スタイル"},
    "networks": {"en": "LoRA and embeddings", "ja": "LoRA と埋め込み"},
    "network_pick": {"en": "Your LoRAs, hypernetworks and embeddings", "ja": "使える LoRA・ハイパーネットワーク・埋め込み"},
    "network_insert": {"en": "Add to prompt", "ja": "プロンプトに追加"},
    "sampler": {"en": "Sampling method", "ja": "サンプリング方法"},
    "scheduler": {"en": "Schedule type", "ja": "スケジュールタイプ"},
    "steps": {"en": "Sampling steps", "ja": "サンプリングステップ数"},
    "cfg_scale": {"en": "CFG Scale", "ja": "CFG スケール"},
    "width": {"en": "Width", "ja": "幅"},
    "height": {"en": "Height", "ja": "高さ"},
    "seed": {"en": "Seed (-1: random)", "ja": "シード (-1: ランダム)"},
    "n_iter": {"en": "Batch count", "ja": "バッチ回数"},
    "batch_size": {"en": "Batch size", "ja": "バッチサイズ"},
    "denoising_strength": {"en": "Denoising strength", "ja": "ノイズ除去強度"},
    "init_image": {"en": "Image (paint over it to inpaint)", "ja": "画像 (塗った部分をインペイント)"},
    "mask_blur": {"en": "Mask blur", "ja": "マスクのぼかし"},
    "masked_content": {"en": "Masked content", "ja": "マスクされた部分"},
    "inpaint_area": {"en": "Inpaint only the masked area", "ja": "マスク部分のみインペイント"},
    "generate": {"en": "Generate", "ja": "生成"},
    "cancel": {"en": "Cancel", "ja": "中止"},
    "save_defaults": {"en": "Save as my defaults", "ja": "既定値として保存"},
    "defaults_saved": {"en": "Your defaults are saved.", "ja": "既定値を保存しました。"},
    "output": {"en": "Output", "ja": "出力"},
    "generation_info": {"en": "Generation parameters", "ja": "生成パラメータ"},
    "send_to_img2img": {"en": "Send to img2img", "ja": "img2img に送る"},
    "send_to_txt2img": {"en": "Send to txt2img", "ja": "txt2img に送る"},
    "my_images": {"en": "My images", "ja": "自分の画像"},
    "refresh_gallery": {"en": "Refresh", "ja": "更新"},
    "png_source": {"en": "Source image", "ja": "元画像"},
    "png_parameters": {"en": "Parameters", "ja": "パラメータ"},
    "png_none": {"en": "This image has no generation parameters.", "ja": "この画像には生成パラメータがありません。"},
    "extensions_intro": {
        "en": "Extensions installed on this platform by its operators. Tick the ones you want in your workspace.",
        "ja": "運用者がこのプラットフォームに導入した拡張機能です。ワークスペースで使うものにチェックを入れてください。",
    },
    "extensions_enabled": {"en": "Enabled for me", "ja": "自分のワークスペースで有効"},
    "extensions_apply": {"en": "Apply", "ja": "適用"},
    "extensions_saved": {"en": "Extensions updated.", "ja": "拡張機能を更新しました。"},
    "extension_unavailable": {"en": "(not available on this platform)", "ja": "(このプラットフォームでは利用不可)"},
    "no_extensions": {"en": "No extensions are installed.", "ja": "拡張機能は導入されていません。"},
    "language": {"en": "Interface language", "ja": "表示言語"},
    "language_saved": {"en": "Language saved.", "ja": "表示言語を保存しました。"},
    "status_queued": {"en": "Queued", "ja": "待機中"},
    "status_dispatched": {"en": "Starting", "ja": "開始中"},
    "status_running": {"en": "Generating", "ja": "生成中"},
    "status_succeeded": {"en": "Done", "ja": "完了"},
    "status_failed": {"en": "Failed", "ja": "失敗"},
    "status_cancelled": {"en": "Cancelled", "ja": "中止しました"},
    "nothing_to_cancel": {"en": "Nothing is running.", "ja": "実行中のジョブはありません。"},
    "cancel_requested": {"en": "Cancelling…", "ja": "中止しています…"},
    "select_image_first": {"en": "Pick an image first.", "ja": "先に画像を選んでください。"},
    "need_init_image": {"en": "Upload an image first.", "ja": "先に画像をアップロードしてください。"},
    "unexpected_error": {
        "en": "Something went wrong on our side; the operators have the details.",
        "ja": "サーバー側で問題が発生しました。詳細は運用者に記録されています。",
    },
}


def text(language: str, key: str) -> str:
    entry = STRINGS[key]
    return entry.get(language) or entry["en"]
