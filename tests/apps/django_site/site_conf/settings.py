"""Minimal settings: no database, no installed apps; views and URL patterns only."""
SECRET_KEY = "funcsight-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "site_conf.urls"
INSTALLED_APPS = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {}
USE_TZ = True
WSGI_APPLICATION = "site_conf.wsgi.application"
LOGGING_CONFIG = None
