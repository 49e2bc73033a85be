"""Interface strings of the Extras tab, the seed buttons and Skip (pure; merged into `i18n.STRINGS`).

Kept apart from `i18n.py` so the strings of these features live beside each other; every entry
has every language of `i18n.LANGUAGES` (the workspace's test checks it on the merged table).
"""

from __future__ import annotations

EXTRAS_STRINGS: dict[str, dict[str, str]] = {
    "tab_extras": {"en": "Extras", "ja": "その他"},
    "ex_single": {"en": "Single image", "ja": "単一画像"},
    "ex_gallery": {"en": "Batch from Gallery", "ja": "ギャラリーから一括"},
    "ex_folder": {"en": "Batch from folder", "ja": "フォルダから一括"},
    "ex_image": {"en": "Source", "ja": "元画像"},
    "ex_gallery_pick": {"en": "Images of your gallery", "ja": "ギャラリーの画像"},
    "ex_folder_path": {"en": "Input folder", "ja": "入力フォルダ"},
    "ex_folder_info": {
        "en": "A folder inside your working directory, e.g. inputs/faces (no absolute paths, '..' or links)",
        "ja": "作業ディレクトリ内のフォルダ (例: inputs/faces)。絶対パス、'..'、リンクは使えません",
    },
    "ex_resize_mode": {"en": "Resize", "ja": "リサイズ"},
    "ex_scale_by": {"en": "Scale by", "ja": "倍率で"},
    "ex_scale_to": {"en": "Scale to", "ja": "サイズ指定"},
    "ex_resize": {"en": "Resize", "ja": "倍率"},
    "ex_resize_w": {"en": "Width", "ja": "幅"},
    "ex_resize_h": {"en": "Height", "ja": "高さ"},
    "ex_crop": {"en": "Crop to fit", "ja": "切り抜いて合わせる"},
    "ex_upscaler_1": {"en": "Upscaler 1", "ja": "アップスケーラー 1"},
    "ex_upscaler_2": {"en": "Upscaler 2", "ja": "アップスケーラー 2"},
    "ex_upscaler_2_visibility": {"en": "Upscaler 2 visibility", "ja": "アップスケーラー 2 の強さ"},
    "ex_gfpgan": {"en": "GFPGAN visibility", "ja": "GFPGAN の強さ"},
    "ex_codeformer": {"en": "CodeFormer visibility", "ja": "CodeFormer の強さ"},
    "ex_codeformer_weight": {
        "en": "CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
        "ja": "CodeFormer の重み (0 = 効果最大、1 = 効果最小)",
    },
    "skip": {"en": "Skip", "ja": "スキップ"},
    "nothing_to_skip": {"en": "Nothing is running.", "ja": "実行中のものはありません。"},
    "no_seed_to_reuse": {"en": "No image to take a seed from yet.", "ja": "シードを取れる画像がまだありません。"},
}
