"""Function views, each calling the catalog's logic."""
from django.http import JsonResponse

from catalog import logic


def item_detail(request, item_id):
    price = logic.with_tax(logic.lookup(item_id))
    label = logic.normalize(f" Item {item_id} ")
    return JsonResponse({"item": item_id, "price": price, "label": label})


def sku_detail(request, code):
    words = [logic.normalize(part) for part in code.split("-")]
    return JsonResponse({"sku": code, "words": words})


def stock(request, item_id):
    try:
        status = "reserved" if logic.reserve(item_id) else "none"
    except logic.OutOfStock:
        status = "out_of_stock"
    return JsonResponse({"item": item_id, "status": status})
