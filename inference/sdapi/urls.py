"""Routes of `/sdapi/v1/`, as AUTOMATIC1111 1.10 names them."""

from django.urls import path

from inference.sdapi import api, extras, generate, interrogate

urlpatterns = [
    path("txt2img", generate.txt2img),
    path("img2img", generate.img2img),
    path("extra-single-image", extras.extra_single_image),
    path("extra-batch-images", extras.extra_batch_images),
    path("png-info", api.png_info),
    path("interrogate", interrogate.interrogate),
    path("progress", api.progress),
    path("interrupt", api.interrupt),
    path("skip", api.skip),
    path("options", api.options),
    path("cmd-flags", api.cmd_flags),
    path("samplers", api.samplers),
    path("schedulers", api.schedulers),
    path("upscalers", api.upscalers),
    path("latent-upscale-modes", api.latent_upscale_modes),
    path("sd-models", api.sd_models),
    path("sd-vae", api.sd_vae),
    path("loras", api.loras),
    path("hypernetworks", api.hypernetworks),
    path("embeddings", api.embeddings),
    path("face-restorers", api.face_restorers),
    path("realesrgan-models", api.realesrgan_models),
    path("prompt-styles", api.prompt_styles),
    path("script-info", api.script_info),
    path("scripts", api.scripts),
    path("memory", api.memory),
    path("refresh-checkpoints", api.refresh),
    path("refresh-loras", api.refresh),
    path("refresh-vae", api.refresh),
    path("refresh-embeddings", api.refresh),
    path("unload-checkpoint", api.acknowledged),
    path("reload-checkpoint", api.acknowledged),
]
