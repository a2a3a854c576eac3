"""URL patterns: a built-in converter, a custom converter, and an included URLconf."""
from django.urls import include, path, register_converter

from catalog import converters, views

register_converter(converters.SkuConverter, "sku")

urlpatterns = [
    path("items/<int:item_id>/", views.item_detail),
    path("skus/<sku:code>/", views.sku_detail),
    path("api/", include("catalog.api_urls")),
]
