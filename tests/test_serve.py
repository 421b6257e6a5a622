"""``maskahand serve`` as a user meets it: the real server (subprocess, free loopback port, a tiny checkpoint)
over HTTP, and the page in a real headless Chromium driven by Selenium: the espresso pair grounded and
shown, a text file refused on the page while the server goes on serving, the private temp folder removed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.test_eval_e2e import save_checkpoint

TOKEN = "test-token-21"
HEIGHT = 160  # eval.overlay_height of the test server
SERVER = ["eval.image_size=64", "eval.clip_length=4", "eval.clip_stride=4", "eval.device=cpu",
          f"eval.overlay_height={HEIGHT}", "serve.max_upload_mb=4"]  # fmt: skip
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1100,760"]  # fmt: skip
INSTALL_HINT = "needs Debian's headless browser: apt-get install -y chromium chromium-driver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    ckpt = save_checkpoint(root / "ft.pt", heatmaps=7, actions=7)
    tmp = root / "tmp"  # the server's TMPDIR: its private folder must be gone when it stops
    tmp.mkdir()
    port = free_port()
    cmd = [sys.executable, "-m", "maskahand.cli", "serve", "--checkpoint", str(ckpt), "--port", str(port),
           "--token", TOKEN, *SERVER, f"serve.examples_dir={shared_data}"]  # fmt: skip
    log = (root / "server.log").open("w")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=5) as r:
                assert json.load(r)["ok"] is True
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    assert [p.name for p in tmp.iterdir() if p.name.startswith("maskahand-serve-")], "private folder"
    yield {"url": url, "proc": proc, "tmp": tmp, "log": root / "server.log"}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    log.close()
    assert list(tmp.iterdir()) == [], "the server's private temp folder outlived it"


def announce(url: str, length: int) -> tuple[int, dict]:
    """Only the headers of a POST announcing ``length`` bytes: the server must answer before any body."""
    import http.client

    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    conn.putrequest("POST", "/api/ground")
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(length))
    conn.putheader("X-Maskahand-Token", TOKEN)
    conn.endheaders()
    response = conn.getresponse()
    try:
        return response.status, json.load(response)
    finally:
        conn.close()


def post(url: str, fields: dict[str, str], files: dict[str, Path] | None = None, token: str | None = TOKEN
         ) -> tuple[int, dict]:  # fmt: skip
    """A multipart POST built by hand (what a browser sends)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, path in (files or {}).items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n\r\n'
        )
        parts.append(head.encode() + path.read_bytes() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if token is not None:
        headers["X-Maskahand-Token"] = token
    req = urllib.request.Request(url + "/api/ground", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_http_token_size_and_example_names(server, shared_data):
    url = server["url"]
    assert post(url, {"example": "espresso"}, token=None)[0] == 401
    assert post(url, {"example": "espresso"}, token="wrong")[0] == 401
    status, body = post(url, {"example": "../images/opra_espresso_target.jpg"})
    assert status == 400 and body["error"] == "unknown example; this server has: espresso"
    status, body = announce(url, 5 * 2**20)  # serve.max_upload_mb=4
    assert status == 413 and body["error"] == "upload of 5.0 MiB; this server takes at most 4 MiB"
    status, body = post(
        url, {"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}
    )  # more fields than a form has
    assert status == 400 and body["error"].startswith("bad request: Too many fields"), body
    status, body = post(url, {"example": "espresso"})
    assert status == 200, body
    import base64

    assert base64.b64decode(body["overlay"])[:4] == b"\x1a\x45\xdf\xa3"  # WebM (EBML)
    assert base64.b64decode(body["heatmap"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert body["windows"] == 2 and len(body["actions"]) == 3 and body["seconds"] > 0
    # a PNG renamed .mp4 is refused by its content, with the CLI's typed error naming the upload
    fake = server["tmp"].parent / "clip.mp4"
    shutil.copy(shared_data / "images" / "hands23" / "EK_0028_P12_101_frame_0000086975.jpg", fake)
    status, body = post(
        url, {}, {"video": fake, "image": shared_data / "images" / "opra_espresso_target.jpg"}
    )
    assert status == 400 and body["error"].startswith("clip.mp4: not a video: ")


def test_two_users_at_once_take_turns_on_the_model(server):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: post(server["url"], {"example": "espresso"}), range(2)))
    assert [status for status, _ in answers] == [200, 200]
    first, second = sorted((body for _, body in answers), key=lambda b: b["waited"])
    # the later one waited for (nearly) all of the earlier one's inference: never both on the device
    assert second["waited"] >= 0.8 * first["seconds"], (first["waited"], first["seconds"], second["waited"])


def test_one_inference_at_a_time_and_a_bounded_queue(tmp_path):
    from maskahand.core.config import ServeConfig, ServeRecipe
    from maskahand.serve.engine import BusyError, GroundingEngine

    engine = GroundingEngine(None, ServeRecipe(serve=ServeConfig(queue_size=1)))
    try:
        with ExitStack() as stack:
            stack.enter_context(engine.admit())  # running
            stack.enter_context(engine.admit())  # waiting
            with pytest.raises(BusyError, match="busy: 2 request"):
                stack.enter_context(engine.admit())
        with engine.admit():  # places come back
            assert engine.waiting == 1
        with engine.workdir() as work:
            (work / "video").write_bytes(b"x")
        assert not work.exists() and engine.root.stat().st_mode & 0o077 == 0
    finally:
        engine.close()
    assert not engine.root.exists()


# --- the page in a real browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"{CHROMIUM} / {CHROMEDRIVER} not found: {INSTALL_HINT}")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (requirements/dev.txt)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def submit(driver, url: str, video: Path, image: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.find_element(By.ID, "video").send_keys(str(video))
    driver.find_element(By.ID, "image").send_keys(str(image))
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "run").click()


def wait_for(driver, script: str, timeout: float = 240):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: d.execute_script(script))


def test_a_text_file_as_video_shows_the_error_and_the_server_goes_on(server, browser, shared_data, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    submit(browser, server["url"], text, shared_data / "images" / "opra_espresso_target.jpg")
    message = wait_for(
        browser, "const e = document.getElementById('error'); return !e.hidden && e.textContent;"
    )
    assert message == "notes.txt: not a video: its content is not MP4/MOV, WebM/Matroska or AVI"
    assert browser.execute_script("return document.getElementById('results').hidden") is True
    assert server["proc"].poll() is None
    with urllib.request.urlopen(server["url"] + "/api/health", timeout=10) as r:
        assert json.load(r)["ok"] is True


def test_the_espresso_pair_shows_its_overlay_at_the_image_aspect(server, browser, shared_data, tmp_path):
    from PIL import Image

    video = shared_data / "videos" / "opra_espresso_vp9.mp4"
    image = shared_data / "images" / "opra_espresso_target.jpg"
    submit(browser, server["url"], video, image)
    ready = "const v = document.getElementById('overlay'); return v.readyState >= 2 && v.videoWidth > 0;"
    wait_for(browser, ready)
    shown = browser.execute_script(
        "const v = document.getElementById('overlay'), h = document.getElementById('heatmap');"
        "return [v.videoWidth, v.videoHeight, h.naturalWidth, h.naturalHeight, h.complete,"
        " document.getElementById('error').hidden, document.getElementById('actions').children.length];"
    )
    with Image.open(image) as im:
        iw, ih = im.size
    video_w, video_h, heat_w, heat_h, complete, no_error, actions = shown
    assert complete and no_error and actions == 3
    assert (heat_w, heat_h) == (iw, ih)  # the summed map is drawn over the image at its own size
    # the overlay: video pane (640x360 at HEIGHT) + the image pane at the image's aspect + the colour bar
    image_pane = round(HEIGHT * iw / ih)
    video_pane = round(HEIGHT * 640 / 360)
    assert video_w == video_pane + image_pane + 14 + 52 + (video_pane + image_pane) % 2
    assert video_h > HEIGHT
    # a still frame without the player's controls for the picture (the second window, its own map)
    browser.execute_script(
        "const v = document.getElementById('overlay'); v.pause(); v.controls = false; v.currentTime = 2.05;"
        "document.getElementById('results').scrollIntoView();"
    )
    wait_for(
        browser, "const v = document.getElementById('overlay'); return !v.seeking && v.currentTime > 2;", 30
    )
    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("MASKAHAND_SERVE_SCREENSHOT"):  # how docs/serve.png was taken
        shutil.copy(shot, os.environ["MASKAHAND_SERVE_SCREENSHOT"])


def test_a_shared_example_is_picked_by_name_on_the_page(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server["url"] + "/")
    wait_for(browser, "return document.getElementById('example').options.length > 1;", 30)
    Select(browser.find_element(By.ID, "example")).select_by_value("espresso")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "run").click()
    text = wait_for(browser, "const r = document.getElementById('results'); return !r.hidden && "
                    "document.getElementById('timing').textContent;")  # fmt: skip
    assert text.startswith("opra_espresso_vp9.mp4 -> opra_espresso_target.jpg: inference ")


def test_uploads_are_judged_by_content_and_limits(shared_data, tmp_path):
    from maskahand.core.config import ServeConfig, VideoConfig
    from maskahand.serve.uploads import (
        ImageUploadError,
        VideoTooLongError,
        check_image,
        check_video,
        display_name,
    )
    from maskahand.video.errors import TruncatedVideoError

    video = shared_data / "videos" / "opra_espresso_vp9.mp4"
    image = shared_data / "images" / "opra_espresso_target.jpg"
    assert check_video(video, "v.mp4", ServeConfig(), VideoConfig()) == pytest.approx(2.1, abs=0.2)
    with pytest.raises(
        VideoTooLongError, match=r"^v\.mp4: too long: 2\.\d s; this server takes at most 1 s$"
    ):
        check_video(video, "v.mp4", ServeConfig(max_video_seconds=1), VideoConfig())
    cut = tmp_path / "cut"
    cut.write_bytes(video.read_bytes()[:3000])  # an MP4 start, then nothing: the reader's typed error
    with pytest.raises(TruncatedVideoError) as e:
        check_video(cut, "cut.mp4", ServeConfig(), VideoConfig())
    assert str(e.value).startswith("cut.mp4: truncated: ") and str(tmp_path) not in str(e.value)
    from PIL import Image

    with Image.open(image) as im:
        size = im.size
    assert check_image(image, "i.jpg", ServeConfig()) == size
    with pytest.raises(
        ImageUploadError, match=rf"^i\.jpg: {size[0]}x{size[1]} pixels; .* at most 1000 pixels$"
    ):
        check_image(image, "i.jpg", ServeConfig(max_image_pixels=1000))
    assert display_name("../../etc/passwd", "the video") == "passwd"
    assert display_name("C:\\clips\\a\x00b.mp4", "the video") == "ab.mp4"
    assert display_name("", "the video") == "the video"


def test_an_open_address_without_a_token_is_announced_loudly(tmp_path, caplog):
    from maskahand.cli import main

    missing = str(tmp_path / "missing.pt")  # the command stops at the checkpoint, after the warning
    for host, token, loud in [("0.0.0.0", [], True), ("0.0.0.0", ["--token", "s"], False), ("127.0.0.1", [], False),
                              ("::1", [], False), ("192.0.2.7", [], True)]:  # fmt: skip
        caplog.clear()
        assert main(["serve", "--checkpoint", missing, "--host", host, *token, "--port", "1"]) != 0
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert bool(warned) == loud, (host, token, warned)
        if loud:
            assert f"OPEN: bound to {host}:1 WITHOUT a token" in warned[0]


def test_a_port_in_use_is_a_usage_error_before_the_model_loads(tmp_path, capsys):
    from maskahand.cli import main
    from maskahand.core.cli_util import EXIT_USAGE

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # the checkpoint does not exist: the port is refused first
        assert (
            main(["serve", "--checkpoint", str(tmp_path / "missing.pt"), "--port", str(port)]) == EXIT_USAGE
        )
    assert capsys.readouterr().err.strip() == (
        f"maskahand serve: --host 127.0.0.1 --port {port}: cannot listen there (Address already in use)"
    )
