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
    "tiling": {"en": "Tiling", "ja": "タイリング"},
    "preview": {"en": "preview", "ja": "プレビュー"},
    "hires_fix": {"en": "Hires. fix", "ja": "高解像度補助 (Hires. fix)"},
    "enable_hr": {"en": "Upscale and refine (hires fix)", "ja": "アップスケールして仕上げる"},
    "hr_upscaler": {"en": "Upscaler", "ja": "アップスケーラー"},
    "hr_scale": {"en": "Upscale by", "ja": "拡大率"},
    "hr_second_pass_steps": {"en": "Hires steps (0: same as sampling)", "ja": "高解像度ステップ数 (0: 同じ)"},
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
    # the home page and the team page
    "home_title": {"en": "Home", "ja": "ホーム"},
    "home_workspace": {"en": "Your workspace", "ja": "ワークスペース"},
    "home_open_workspace": {"en": "Open my workspace", "ja": "ワークスペースを開く"},
    "home_workspace_hint": {
        "en": "txt2img, img2img and inpainting, your models, your gallery — in your own WebUI.",
        "ja": "txt2img・img2img・インペイント、自分のモデルとギャラリーを自分専用の WebUI で。",
    },
    "home_team": {"en": "Team", "ja": "チーム"},
    "home_operator": {"en": "You are a platform operator; you belong to no team.", "ja": "プラットフォーム運用者です (チームには属していません)。"},
    "home_usage": {"en": "Usage this month", "ja": "今月の利用量"},
    "home_images": {"en": "images", "ja": "枚"},
    "home_gpu_seconds": {"en": "GPU-seconds", "ja": "GPU 秒数"},
    "home_jobs": {"en": "jobs", "ja": "ジョブ"},
    "home_jobs_label": {"en": "Jobs", "ja": "ジョブ数"},
    "home_recent_images": {"en": "Recent images", "ja": "最近の画像"},
    "home_no_images": {"en": "No images yet: open your workspace and generate one.", "ja": "まだ画像はありません。ワークスペースで生成してください。"},
    "home_recent_jobs": {"en": "Recent jobs", "ja": "最近のジョブ"},
    "home_no_jobs": {"en": "No jobs yet.", "ja": "ジョブはまだありません。"},
    "home_checkpoints": {"en": "Checkpoints you can use", "ja": "使えるチェックポイント"},
    "home_administration": {"en": "Administration", "ja": "管理"},
    "home_admin_platform": {"en": "Platform administration (tenants, workers, extensions)", "ja": "プラットフォーム管理 (テナント・ワーカー・拡張機能)"},
    "home_admin_team": {"en": "Your team: members and usage", "ja": "チームのメンバーと利用量"},
    "home_api": {"en": "API", "ja": "API"},
    "home_sign_out": {"en": "Sign out", "ja": "サインアウト"},
    "home_save": {"en": "Save", "ja": "保存"},
    "job": {"en": "Job", "ja": "ジョブ"},
    "status": {"en": "Status", "ja": "状態"},
    "images": {"en": "Images", "ja": "画像"},
    "team_title": {"en": "Team", "ja": "チーム"},
    "team_members": {"en": "Members", "ja": "メンバー"},
    "team_member": {"en": "Member", "ja": "メンバー"},
    "team_role": {"en": "Role", "ja": "役割"},
    "team_models": {"en": "Team models", "ja": "チームのモデル"},
    "team_no_models": {"en": "No team models yet.", "ja": "チームのモデルはまだありません。"},
}


def text(language: str, key: str) -> str:
    entry = STRINGS[key]
    return entry.get(language) or entry["en"]


def strings(language: str) -> dict[str, str]:
    """Every string in `language` (for templates: `{{ t.home_title }}`)."""
    return {key: text(language, key) for key in STRINGS}
