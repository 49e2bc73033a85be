"""Interface strings of the workspace (and the home page) in each supported language (pure).

`text(language, key)` returns the string, falling back to English for a missing translation.
A member's language is `WorkspacePreferences.language`, set from the workspace's Settings tab
or the home page.
"""

from __future__ import annotations

from frontend.workspace.i18n_extras import EXTRAS_STRINGS

LANGUAGES = ("en", "ja")
LANGUAGE_NAMES = {"en": "English", "ja": "日本語"}

STRINGS: dict[str, dict[str, str]] = {
    "title": {"en": "Atelier workspace", "ja": "Atelier ワークスペース"},
    "home": {"en": "Home", "ja": "ホーム"},
    "api_docs": {"en": "API", "ja": "API"},
    "checkpoint": {"en": "Stable Diffusion checkpoint", "ja": "Stable Diffusion チェックポイント"},
    "vae": {"en": "SD VAE", "ja": "SD VAE"},
    "refresh": {"en": "Refresh models", "ja": "モデルを再読み込み"},
    "tab_txt2img": {"en": "txt2img", "ja": "txt2img"},
    "tab_img2img": {"en": "img2img", "ja": "img2img"},
    "tab_gallery": {"en": "Gallery", "ja": "ギャラリー"},
    "tab_pnginfo": {"en": "PNG Info", "ja": "PNG 情報"},
    "tab_extensions": {"en": "Extensions", "ja": "拡張機能"},
    "tab_settings": {"en": "Settings", "ja": "設定"},
    "tab_beautiful-prompt": {"en": "BeautifulPrompt", "ja": "BeautifulPrompt"},
    # the BeautifulPrompt tab (the beautiful-prompt extension)
    "bp_intro": {
        "en": "Type a short prompt, pick a prompt-generation model and get detailed prompts back; send the one you "
              "like to txt2img or img2img. The expansion runs on the platform's GPU workers.",
        "ja": "短いプロンプトを入力し、プロンプト生成モデルを選ぶと、詳しいプロンプトが返ってきます。"
              "気に入ったものを txt2img や img2img に送れます。展開はプラットフォームの GPU ワーカーで実行されます。",
    },
    "bp_prompt": {"en": "Short prompt", "ja": "短いプロンプト"},
    "bp_model": {"en": "Prompt-generation model", "ja": "プロンプト生成モデル"},
    "bp_no_models": {
        "en": "No prompt-generation model is installed for you yet. A model is a causal language model folder in the "
              "transformers layout (`config.json`, the tokenizer files, `model.safetensors`), for example "
              "`pai-bloom-1b1-text2prompt-sd` or `AUTOMATIC/promptgen-lexart`. Put one in your own folder "
              "`{user_folder}`, ask your team admin for the team's `{team_folder}`, or an operator for the public "
              "`{public_folder}`; then click Refresh.",
        "ja": "使えるプロンプト生成モデルがまだありません。モデルは transformers 形式の因果言語モデルのフォルダ "
              "(`config.json`、トークナイザーのファイル、`model.safetensors`) です (例: `pai-bloom-1b1-text2prompt-sd`、"
              "`AUTOMATIC/promptgen-lexart`)。自分のフォルダ `{user_folder}` に置くか、チームの `{team_folder}` を"
              "チーム管理者に、公開フォルダ `{public_folder}` を運用者に依頼し、再読み込みしてください。",
    },
    "bp_sampling": {"en": "Sampling settings", "ja": "サンプリング設定"},
    "bp_temperature": {"en": "Temperature", "ja": "温度 (temperature)"},
    "bp_top_k": {"en": "Top-k (0: off)", "ja": "Top-k (0: 無効)"},
    "bp_top_p": {"en": "Top-p (1: off)", "ja": "Top-p (1: 無効)"},
    "bp_repetition_penalty": {"en": "Repetition penalty", "ja": "繰り返しペナルティ"},
    "bp_max_length": {"en": "Maximum length (new tokens)", "ja": "最大長 (新しいトークン数)"},
    "bp_num_results": {"en": "Number of results", "ja": "結果の数"},
    "bp_send_mode": {"en": "Sending a result to a prompt", "ja": "結果をプロンプトに送るとき"},
    "bp_append": {"en": "Append to the prompt", "ja": "プロンプトに追加"},
    "bp_replace": {"en": "Replace the prompt", "ja": "プロンプトを置き換え"},
    "bp_result": {"en": "Result {index}", "ja": "結果 {index}"},
    "bp_to_txt2img": {"en": "to txt2img", "ja": "txt2img へ"},
    "bp_to_img2img": {"en": "to img2img", "ja": "img2img へ"},
    "bp_history": {"en": "My last expansions", "ja": "最近の展開"},
    "bp_no_results": {"en": "The model returned no text: try a longer maximum length.",
                      "ja": "モデルがテキストを返しませんでした。最大長を長くしてみてください。"},
    "bp_extension_off": {
        "en": "BeautifulPrompt is off for you: turn it on in the Extensions tab.",
        "ja": "BeautifulPrompt は無効です。拡張機能タブで有効にしてください。",
    },
    "bp_empty_result": {"en": "This result is empty.", "ja": "この結果は空です。"},
    "tab_hidden": {
        "en": "The {tab} tab is turned off on this platform by its operators.",
        "ja": "{tab} タブはこのプラットフォームの運用者によって無効にされています。",
    },
    "prompt": {"en": "Prompt", "ja": "プロンプト"},
    "negative_prompt": {"en": "Negative prompt", "ja": "ネガティブプロンプト"},
    "styles": {"en": "Styles", "ja": "スタイル"},
    "style_name": {"en": "Style name", "ja": "スタイル名"},
    "style_save": {"en": "💾 Save", "ja": "💾 保存"},  # words too: not every browser has an emoji font
    "style_delete": {"en": "🗑 Delete", "ja": "🗑 削除"},
    "style_saved": {"en": "Style {name} saved as yours.", "ja": "スタイル {name} を自分のスタイルとして保存しました。"},
    "style_deleted": {"en": "Style {name} deleted.", "ja": "スタイル {name} を削除しました。"},
    "style_pick_to_delete": {"en": "Pick one of your own styles in the list to delete it.",
                             "ja": "削除する自分のスタイルを一覧から選んでください。"},
    "style_scope_user": {"en": "yours", "ja": "自分"},
    "style_scope_tenant": {"en": "team", "ja": "チーム"},
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
    "restore_faces": {"en": "Restore faces", "ja": "顔の修復"},
    "hires_fix": {"en": "Hires. fix", "ja": "高解像度補助 (Hires. fix)"},
    "enable_hr": {"en": "Upscale and refine (hires fix)", "ja": "アップスケールして仕上げる"},
    # the txt2img tab's Script dropdown: A1111's X/Y/Z plot (frontend/workspace/tabs/xyz.py)
    "script": {"en": "Script", "ja": "スクリプト"},
    "xyz_x_type": {"en": "X type", "ja": "X 軸の種類"},
    "xyz_x_values": {"en": "X values", "ja": "X 軸の値"},
    "xyz_y_type": {"en": "Y type", "ja": "Y 軸の種類"},
    "xyz_y_values": {"en": "Y values", "ja": "Y 軸の値"},
    "xyz_z_type": {"en": "Z type", "ja": "Z 軸の種類"},
    "xyz_z_values": {"en": "Z values", "ja": "Z 軸の値"},
    "xyz_help": {
        "en": "One image per combination of values: comma lists (quotes for a value with a comma), ranges 1-5, "
              "1-5 (+2), 10-1 (-3), 1-10 [5]. Prompt S/R: the first value is replaced by each value in the prompts.",
        "ja": "値の組み合わせごとに 1 枚生成します。カンマ区切り (カンマを含む値は引用符で囲む)、範囲 1-5、"
              "1-5 (+2)、10-1 (-3)、1-10 [5]。Prompt S/R: 最初の値をプロンプト中で各値に置き換えます。",
    },
    "xyz_cell": {"en": "Cell {k} of {n}", "ja": "セル {k} / {n}"},
    "xyz_grid": {"en": "Grid", "ja": "グリッド"},
    "hr_upscaler": {"en": "Upscaler", "ja": "アップスケーラー"},
    "hr_scale": {"en": "Upscale by", "ja": "拡大率"},
    "hr_second_pass_steps": {"en": "Hires steps (0: same as sampling)", "ja": "高解像度ステップ数 (0: 同じ)"},
    "init_image": {"en": "Image (paint over it to inpaint)", "ja": "画像 (塗った部分をインペイント)"},
    "mask_blur": {"en": "Mask blur", "ja": "マスクのぼかし"},
    "masked_content": {"en": "Masked content", "ja": "マスクされた部分"},
    "inpaint_area": {"en": "Inpaint only the masked area", "ja": "マスク部分のみインペイント"},
    # the ControlNet panel (labels as the sd-webui-controlnet extension shows them)
    "controlnet": {"en": "ControlNet", "ja": "ControlNet"},
    "controlnet_unit": {"en": "ControlNet Unit {index}", "ja": "ControlNet ユニット {index}"},
    "controlnet_enable": {"en": "Enable", "ja": "有効にする"},
    "controlnet_pixel_perfect": {"en": "Pixel Perfect", "ja": "ピクセルパーフェクト"},
    "controlnet_image": {"en": "Control image", "ja": "コントロール画像"},
    "controlnet_image_img2img": {
        "en": "Control image (empty: the img2img image is used)",
        "ja": "コントロール画像 (空欄なら img2img の画像を使用)",
    },
    "controlnet_module": {"en": "Preprocessor", "ja": "プリプロセッサ"},
    "controlnet_model": {"en": "Model", "ja": "モデル"},
    "controlnet_weight": {"en": "Control Weight", "ja": "コントロールの重み"},
    "controlnet_guidance_start": {"en": "Starting Control Step", "ja": "適用開始ステップ"},
    "controlnet_guidance_end": {"en": "Ending Control Step", "ja": "適用終了ステップ"},
    "controlnet_processor_res": {"en": "Preprocessor Resolution", "ja": "プリプロセッサ解像度"},
    "controlnet_threshold_a": {"en": "Threshold A", "ja": "しきい値 A"},
    "controlnet_threshold_b": {"en": "Threshold B", "ja": "しきい値 B"},
    "controlnet_canny_low": {"en": "Canny Low Threshold", "ja": "Canny 下限しきい値"},
    "controlnet_canny_high": {"en": "Canny High Threshold", "ja": "Canny 上限しきい値"},
    "controlnet_xdog_threshold": {"en": "XDoG Threshold", "ja": "XDoG しきい値"},
    "controlnet_binary_threshold": {"en": "Binarization Threshold", "ja": "二値化しきい値"},
    "controlnet_sigma": {"en": "Sigma", "ja": "シグマ"},
    "controlnet_down_sampling": {"en": "Down Sampling Rate", "ja": "ダウンサンプリング率"},
    "controlnet_control_mode": {"en": "Control Mode", "ja": "コントロールモード"},
    "controlnet_mode_balanced": {"en": "Balanced", "ja": "バランス"},
    "controlnet_mode_prompt": {"en": "My prompt is more important", "ja": "プロンプトを優先"},
    "controlnet_mode_control": {"en": "ControlNet is more important", "ja": "ControlNet を優先"},
    "controlnet_resize_mode": {"en": "Resize Mode", "ja": "リサイズモード"},
    "controlnet_resize_just": {"en": "Just Resize", "ja": "リサイズのみ"},
    "controlnet_resize_crop": {"en": "Crop and Resize", "ja": "切り抜いてリサイズ"},
    "controlnet_resize_fill": {"en": "Resize and Fill", "ja": "リサイズして余白を埋める"},
    "controlnet_need_image": {
        "en": "ControlNet Unit {index} is enabled but has no control image: upload one, or turn the unit off.",
        "ja": "ControlNet ユニット {index} が有効ですが、コントロール画像がありません。画像をアップロードするか、ユニットを無効にしてください。",
    },
    "controlnet_need_model": {
        "en": "ControlNet Unit {index} is enabled but has no model: pick one (put your own in your models/ControlNet folder and refresh).",
        "ja": "ControlNet ユニット {index} が有効ですが、モデルが選ばれていません。モデルを選んでください (自分のモデルは models/ControlNet フォルダに置いて再読み込み)。",
    },
    "controlnet_detected_map": {"en": "ControlNet detected map", "ja": "ControlNet 検出マップ"},
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
    "face_restoration_model": {"en": "Face restoration model", "ja": "顔の修復モデル"},
    "code_former_weight": {
        "en": "CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
        "ja": "CodeFormer の重み (0 = 効果最大、1 = 効果最小)",
    },
    "save_face_settings": {"en": "Save face restoration settings", "ja": "顔の修復設定を保存"},
    "face_settings_saved": {"en": "Face restoration settings saved.", "ja": "顔の修復設定を保存しました。"},
    "status_queued": {"en": "Queued", "ja": "待機中"},
    # why a queued job waits (inference/waiting.py); {running}, {limit}, {ahead} are filled in
    "queue_no_worker": {"en": "no worker is online: it starts when one is",
                        "ja": "稼働中のワーカーがありません。ワーカーが起動すると開始します"},
    "queue_user_limit": {"en": "you have {running} jobs running (your limit is {limit})",
                         "ja": "実行中のジョブが {running} 件あります（上限 {limit} 件）"},
    "queue_tenant_limit": {"en": "your team has {running} jobs running (its limit is {limit})",
                           "ja": "チームの実行中ジョブが {running} 件あります（上限 {limit} 件）"},
    "queue_next": {"en": "next in line", "ja": "次に実行されます"},
    "queue_in_line": {"en": "{ahead} job(s) ahead", "ja": "前に {ahead} 件のジョブがあります"},
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
    # the API tokens page (/tokens/)
    "home_tokens": {"en": "Your API tokens", "ja": "API トークン"},
    "home_api_docs": {"en": "API documentation (try it with your token)", "ja": "API ドキュメント（トークンで試せます）"},
    "home_tokens_hint": {
        "en": "Create a token on the API tokens page, then:",
        "ja": "API トークンのページでトークンを作成してから:",
    },
    "tokens_title": {"en": "API tokens", "ja": "API トークン"},
    "tokens_hint": {
        "en": "Scripts and A1111 clients call the API with a token: Authorization: Bearer <token>. "
              "A token acts as you; revoke one you no longer use.",
        "ja": "スクリプトや A1111 クライアントはトークンで API を呼びます: Authorization: Bearer <token>。"
              "トークンはあなたとして動作します。使わなくなったものは無効化してください。",
    },
    "tokens_none": {"en": "No tokens yet.", "ja": "トークンはまだありません。"},
    "tokens_name": {"en": "Name", "ja": "名前"},
    "tokens_name_hint": {"en": "what it is for, e.g. laptop or ci", "ja": "用途 (例: laptop, ci)"},
    "tokens_token": {"en": "Token", "ja": "トークン"},
    "tokens_created": {"en": "Created", "ja": "作成日時"},
    "tokens_last_used": {"en": "Last used", "ja": "最終使用"},
    "tokens_revoked_at": {"en": "Revoked", "ja": "無効化日時"},
    "tokens_never": {"en": "never", "ja": "未使用"},
    "tokens_active": {"en": "active", "ja": "有効"},
    "tokens_revoke": {"en": "Revoke", "ja": "無効化"},
    "tokens_create": {"en": "Create a token", "ja": "トークンを作成"},
    "tokens_new": {"en": "New token", "ja": "新しいトークン"},
    "tokens_once": {
        "en": "Copy this token now: it is not shown again (only its hash is stored).",
        "ja": "今すぐコピーしてください。このトークンは二度と表示されません (ハッシュのみ保存)。",
    },
    "tokens_revoked": {"en": "Token {token} ({name}) revoked.", "ja": "トークン {token} ({name}) を無効化しました。"},
    # the services page (/services/: EAS async services)
    "home_services": {"en": "Async services (PAI-EAS queue API)", "ja": "非同期サービス (PAI-EAS キュー API)"},
    "services_title": {"en": "Async services", "ja": "非同期サービス"},
    "services_hint": {
        "en": "Scripts put requests into a service's input queue with the official eas-prediction SDK "
              "(endpoint and token below) and collect the results from its sink queue. "
              "Requests run as the service's owner and are billed to them.",
        "ja": "スクリプトは公式の eas-prediction SDK でサービスの入力キューにリクエストを入れ "
              "(エンドポイントとトークンは下記)、結果をシンクキューから受け取ります。"
              "リクエストはサービスのオーナーとして実行され、オーナーに課金されます。",
    },
    "services_none": {"en": "No services yet.", "ja": "サービスはまだありません。"},
    "services_name": {"en": "Name", "ja": "名前"},
    "services_name_hint": {
        "en": "1–64 letters, digits, '.', '_' or '-' (the SDK's queue name)",
        "ja": "英数字と '.' '_' '-' で 1〜64 文字 (SDK のキュー名)",
    },
    "services_owner": {"en": "Owner (runs and pays)", "ja": "オーナー (実行・課金)"},
    "services_endpoint": {"en": "SDK endpoint", "ja": "SDK エンドポイント"},
    "services_url": {"en": "HTTP URL", "ja": "HTTP URL"},
    "services_queues": {"en": "Queues", "ja": "キュー"},
    "services_default_checkpoint": {"en": "Default checkpoint", "ja": "既定のチェックポイント"},
    "services_owners_default": {"en": "(the owner's default)", "ja": "(オーナーの既定)"},
    "services_payload_limit": {"en": "Payload limit (bytes)", "ja": "ペイロード上限 (バイト)"},
    "services_retention": {"en": "Result retention (hours)", "ja": "結果の保持期間 (時間)"},
    "services_at_most": {"en": "at most", "ja": "最大"},
    "services_depth": {"en": "Queue depth", "ja": "キューの深さ"},
    "services_input_waiting": {"en": "input waiting", "ja": "入力 待機中"},
    "services_input_running": {"en": "input queued or running", "ja": "入力 キュー投入・実行中"},
    "services_sink_uncommitted": {"en": "results not committed", "ja": "未コミットの結果"},
    "services_tokens": {"en": "Tokens", "ja": "トークン"},
    "services_no_tokens": {"en": "No active token: create one to call the service.", "ja": "有効なトークンがありません。作成してください。"},
    "services_token": {"en": "Token", "ja": "トークン"},
    "services_token_name": {"en": "Token name", "ja": "トークン名"},
    "services_created": {"en": "Created", "ja": "作成日時"},
    "services_last_used": {"en": "Last used", "ja": "最終使用"},
    "services_never": {"en": "never", "ja": "未使用"},
    "services_revoke": {"en": "Revoke", "ja": "無効化"},
    "services_new_token": {"en": "New token", "ja": "新しいトークン"},
    "services_token_once": {
        "en": "Copy this token now: it is not shown again (only its hash is stored).",
        "ja": "今すぐコピーしてください。このトークンは二度と表示されません (ハッシュのみ保存)。",
    },
    "services_create": {"en": "Create a service", "ja": "サービスを作成"},
    "services_create_button": {"en": "Create", "ja": "作成"},
    "services_delete": {"en": "Delete…", "ja": "削除…"},
    "services_delete_title": {"en": "Delete this service?", "ja": "このサービスを削除しますか?"},
    "services_delete_warning": {
        "en": "Its tokens stop working, the items of its queues are dropped and its requests still running are cancelled:",
        "ja": "トークンは使えなくなり、キューの項目は破棄され、実行中のリクエストは中止されます:",
    },
    "services_delete_confirm": {"en": "Delete the service", "ja": "サービスを削除"},
    "services_cancel": {"en": "Cancel", "ja": "キャンセル"},
    "services_token_revoked": {"en": "Token {token} of {service} revoked.", "ja": "{service} のトークン {token} を無効化しました。"},
    "services_deleted": {
        "en": "Service {service} deleted ({items} queued items dropped).",
        "ja": "サービス {service} を削除しました (キューの項目 {items} 件を破棄)。",
    },
}
STRINGS.update(EXTRAS_STRINGS)  # the Extras tab, the seed buttons, Skip


def text(language: str, key: str) -> str:
    entry = STRINGS[key]
    return entry.get(language) or entry["en"]


def strings(language: str) -> dict[str, str]:
    """Every string in `language` (for templates: `{{ t.home_title }}`)."""
    return {key: text(language, key) for key in STRINGS}
