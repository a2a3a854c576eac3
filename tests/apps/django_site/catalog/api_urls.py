from django.urls import path

from catalog import views

urlpatterns = [path("stock/<int:item_id>/", views.stock)]
