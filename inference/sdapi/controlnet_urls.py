"""Routes of `/controlnet/`, as the sd-webui-controlnet extension names them."""

from django.urls import path

from inference.sdapi import controlnet_api

urlpatterns = [
    path("model_list", controlnet_api.model_list),
    path("module_list", controlnet_api.module_list),
    path("version", controlnet_api.version),
]
