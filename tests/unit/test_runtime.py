"""Quiet by default: Ray's console handlers print warnings only unless a job runs with --verbose; its file
handlers keep every line."""

from __future__ import annotations

import logging

import pytest

from fer_ray import runtime


@pytest.fixture
def ray_handlers(monkeypatch):
    """A console and a file handler on a "ray.*" logger, as Ray's own modules add them."""
    monkeypatch.delenv(runtime.VERBOSE_ENV, raising=False)
    logger = logging.getLogger("ray.fer_ray_test")
    console, file = logging.StreamHandler(), logging.FileHandler("/dev/null")
    for handler in (console, file):
        handler.setLevel(logging.INFO)
        logger.addHandler(handler)
    yield console, file
    for handler in (console, file):
        logger.removeHandler(handler)
    file.close()


def test_ray_console_prints_warnings_only_by_default(ray_handlers):
    console, file = ray_handlers
    runtime.setup_logging()
    assert not runtime.verbose()
    assert console.level == logging.WARNING and file.level == logging.INFO


def test_verbose_prints_rays_info_lines(ray_handlers, monkeypatch):
    console, file = ray_handlers
    runtime.setup_logging(verbose=True)
    try:
        assert runtime.verbose() and console.level == logging.INFO and file.level == logging.INFO
    finally:
        monkeypatch.setenv(runtime.VERBOSE_ENV, "0")
