"""The page at / in a real browser: Debian's headless Chromium, driven by Selenium through the system chromedriver,
against a real server serving models trained here (a real digits classifier, so drawn digits are read; dry-run
generators and segmenter, which the page only has to show).

Checked: no console errors; strokes drawn with pointer events make the right digit win; the feature maps, the
occlusion heatmap, the atlas and a neuron's top images, the generator's samples and the segmented scene all appear;
an uploaded photo comes back restyled at its own size (a style-shaped model, tests/style_models.py); with tokens on
the page asks for one and then works. Screenshots go to test-artifacts/page/ (CNNSERVE_ARTIFACTS).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from cnnserve.training.cli import main as train
from tests.conftest import ServerThread, loopback_settings
from tests.style_models import served_reference, write_stylizer

pytestmark = [pytest.mark.slow, pytest.mark.browser]


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("CNNSERVE_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "page"
TOKEN = "page-test-token-0123456789"

# Strokes in pixels from the drawing canvas's centre (224 x 224): a vertical bar, and an ellipse.
STROKES = {
    "1": [(0, -70), (0, -35), (0, 0), (0, 35), (0, 70)],
    "0": [(round(40 * math.sin(t / 16 * 2 * math.pi)), round(-65 * math.cos(t / 16 * 2 * math.pi))) for t in range(17)],
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    runs = tmp_path_factory.mktemp("runs")
    common = ["--model-repository", str(repo)]
    assert train(["classifier", *common, "--out-dir", str(runs / "cnn")]) == 0  # real: ~30 s on 2 cores
    assert train(["gan", "--conditional", "--dry-run", *common, "--out-dir", str(runs / "cgan"),
                  "--judge", str(repo / "digits_cnn")]) == 0  # fmt: skip
    assert train(["segmenter", "--dry-run", *common, "--out-dir", str(runs / "seg")]) == 0
    write_stylizer(repo, "stylize_test")
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(loopback_settings(repo)) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("headless Chromium is missing: apt-get install chromium chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    flags = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,2300")
    for flag in flags:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: Any, server: ServerThread) -> None:
    driver.get(f"http://{server.rest_address}/")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready") == "true")


def draw(driver: Any, strokes: list[tuple[int, int]]) -> None:
    canvas = driver.find_element(By.ID, "draw")
    chain = ActionChains(driver).move_to_element_with_offset(canvas, *strokes[0]).click_and_hold()
    for point in strokes[1:]:
        chain = chain.move_to_element_with_offset(canvas, *point)
    chain.release().perform()


def top_label(driver: Any) -> str:
    """Read in one script: the list is rebuilt on every answer, so a found element may be gone by the next call."""
    return str(driver.execute_script("return document.querySelector('#topk li.best')?.dataset.label ?? ''"))


def lit_pixels(driver: Any, selector: str) -> list[int]:
    """For each canvas matching `selector`: how many of its pixels are not black."""
    return list(
        driver.execute_script(
            """
        return [...document.querySelectorAll(arguments[0])].map((c) => {
          const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
          let lit = 0;
          for (let k = 0; k < d.length; k += 4) if (d[k] + d[k + 1] + d[k + 2] > 30) lit++;
          return lit;
        });""",
            selector,
        )
    )


def console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def sprite_lit(repo: Path, layer_name: str, part: str, first: int, count: int) -> list[int]:
    """lit_pixels of tiles first ... first + count - 1 of a layer's published sprite (grey: 3 * v > 30)."""
    atlas = repo / "digits_cnn" / "1" / "atlas"
    index = json.loads((atlas / "index.json").read_text())
    layer = next(layer for layer in index["layers"] if layer["layer"] == layer_name)
    (height, width), columns = layer[part]["tile"], layer[part]["columns"]
    sprite = np.asarray(Image.open(atlas / layer[part]["sprite"]).convert("L")).astype(int)
    tiles = (divmod(k, columns) for k in range(first, first + count))
    return [int((sprite[r * height : (r + 1) * height, c * width : (c + 1) * width] * 3 > 30).sum()) for r, c in tiles]


def test_the_page_reads_drawn_digits_and_shows_what_the_network_sees(
    browser: Any, server: ServerThread, repo: Path
) -> None:
    open_page(browser, server)
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#models tbody tr")]
    assert len(rows) == 4 and all("READY" in row and "CPU" in row for row in rows), rows
    screenshot(browser, "loaded")
    for digit, strokes in STROKES.items():
        browser.find_element(By.ID, "clear").click()
        draw(browser, strokes)
        WebDriverWait(browser, 20).until(lambda d: "for class" in d.find_element(By.ID, "explained").text)
        assert top_label(browser) == digit
        assert browser.find_element(By.ID, "explained").text == f"for class {digit}"
        screenshot(browser, f"drawn-{digit}")
    # the feature maps of both blocks: 32 + 64 channels, most of them lit by a drawing
    maps = lit_pixels(browser, "#features canvas")
    assert len(maps) == 96 and sum(1 for lit in maps if lit) > 48
    assert lit_pixels(browser, "#heatmap")[0] > 0
    # the atlas: a tile per channel of each block, each an image that loaded; a click shows 9 top digits
    # (drawn 1:1 from the published sprites; a channel that fires on the black background has black tiles)
    tiles = lit_pixels(browser, ".atlas-grid canvas")
    blocks = ("features.block1.relu", "features.block2.relu")
    assert tiles == sprite_lit(repo, blocks[0], "optimised", 0, 32) + sprite_lit(repo, blocks[1], "optimised", 0, 64)
    assert sum(1 for lit in tiles if lit) > 48
    browser.find_element(By.CSS_SELECTOR, '.atlas-grid canvas[data-channel="3"]').click()
    WebDriverWait(browser, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#neuron-top figure")) == 9)
    assert lit_pixels(browser, "#neuron-top canvas") == sprite_lit(repo, blocks[0], "top", 3 * 9, 9)
    # generators and the segmenter drew on load
    assert lit_pixels(browser, "#samples")[0] > 100
    assert lit_pixels(browser, "#scene")[0] > 100
    browser.find_element(By.ID, "generate").click()
    time.sleep(0.5)
    screenshot(browser, "atlas-and-generators")
    assert console_errors(browser) == []


def test_an_uploaded_photo_comes_back_restyled_at_its_own_size(browser: Any, server: ServerThread, tmp_path: Path
                                                               ) -> None:  # fmt: skip
    pixels = np.random.default_rng(1).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    open_page(browser, server)
    assert browser.find_element(By.ID, "style-section").is_displayed()
    browser.find_element(By.ID, "photo-file").send_keys(str(tmp_path / "photo.png"))
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "styled").get_attribute("data-size") == "70x45")
    shown = browser.execute_script("""
        const image = document.getElementById("styled");
        const canvas = document.createElement("canvas");
        canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
        const context = canvas.getContext("2d");
        context.drawImage(image, 0, 0);
        return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data);""")
    rgb = np.asarray(shown, np.float32).reshape(45, 70, 4)[..., :3]
    expected = served_reference(pixels)[0].transpose(1, 2, 0) * 255
    assert np.abs(rgb - expected).max() <= 1.01  # the server's PNG, drawn as it came
    screenshot(browser, "restyled")
    assert console_errors(browser) == []


def test_with_tokens_on_the_page_asks_for_one_and_keeps_it_for_the_tab(browser: Any, repo: Path) -> None:
    with ServerThread(loopback_settings(repo, auth_tokens=(TOKEN,))) as guarded:
        browser.get(f"http://{guarded.rest_address}/")
        form = browser.find_element(By.ID, "token-form")
        WebDriverWait(browser, 20).until(lambda d: form.is_displayed())
        screenshot(browser, "token-asked")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        form.submit()
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.body.dataset.ready") == "true")
        assert browser.execute_script("return sessionStorage.getItem('cnnserve-token')") == TOKEN
        assert len(browser.find_elements(By.CSS_SELECTOR, "#models tbody tr")) == 4
        draw(browser, STROKES["1"])
        WebDriverWait(browser, 20).until(lambda d: "for class" in d.find_element(By.ID, "explained").text)
        assert top_label(browser) == "1"
        # the only errors are the 401s that made the page ask
        assert all("401" in message for message in console_errors(browser))
