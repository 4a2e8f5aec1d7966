#!/usr/bin/env python3
"""The chat page (GET /) in headless Chromium, driven by Selenium, against both processes.

The worker has one expert slot per layer behind a slow link model, so an answer
streams for seconds: the test types a prompt, sees the text grow piece by piece, presses
Stop, checks the server let go of the generation (no request admitted, no KV cache
left) and the text stops growing; then a short answer shows tokens/s and the expert
cache hit ratio.

  chat_page_test.py --model DIR --worker-bin BIN --coordinator-bin BIN

Exits 77 (ctest SKIPPED) only when chromium or chromedriver is absent (tools/setup.sh
installs both).
"""

import argparse
import shutil
import sys
import tempfile
import time

import http_fleet
import two_process_test as tp

SLOW_WORKER = ["--cache-per-layer", "1", "--link-gbps", "0.1"]


def run(args):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    fleet = http_fleet.HttpFleet("page", args.worker_bin, args.coordinator_bin, args.model,
                                 worker_flags=SLOW_WORKER)
    profile = tempfile.mkdtemp(prefix="moe-chromium-")
    options = Options()
    options.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    try:
        find = lambda css: driver.find_element(By.CSS_SELECTOR, css)  # noqa: E731
        driver.get(fleet.base + "/")
        tp.wait_for(lambda: find("#model").text == "kjv-moe", 20, "the page to load the model id")

        def set_value(css, value):
            find(css).clear()
            find(css).send_keys(str(value))
        set_value("#temperature", 0)
        set_value("#max-tokens", 900)
        find("#prompt").send_keys("Tell me of Moses and the land of Egypt.")
        find("#send").click()

        answer = lambda: find("#answer-1").text  # noqa: E731
        first = tp.wait_for(answer, 60, "the first streamed text")
        grown = tp.wait_for(lambda: len(answer()) > len(first) and answer(), 60,
                            "the answer to grow while it streams")
        assert find("#status").text == "generating...", find("#status").text
        assert fleet.metric("moe_coordinator_active_requests") == 1
        assert find("#stop").is_enabled()
        print(f"streamed {first!r}, then {grown!r}; pressing Stop", flush=True)
        find("#stop").click()
        tp.wait_for(lambda: find("#status").text == "stopped", 10, "the page to say stopped")
        tp.wait_for(lambda: fleet.metric("moe_coordinator_active_requests") == 0
                    and fleet.metric("moe_coordinator_kv_caches") == 0, 10,
                    "the server to end the generation and free its KV cache")
        stopped_text = answer()
        time.sleep(1.0)
        assert answer() == stopped_text, "text kept arriving after Stop"
        assert not find("#stop").is_enabled() and find("#send").is_enabled()

        set_value("#max-tokens", 6)
        find("#prompt").send_keys("And what said the LORD?")
        find("#send").click()
        tp.wait_for(lambda: find("#status").text == "done", 120, "the second answer to finish")
        assert find("#answer-3").text, "the second answer is empty"
        stats = driver.find_elements(By.CSS_SELECTOR, "#messages .stats")[-1].text
        print(f"after the answer: {stats}", flush=True)
        assert "tokens/s" in stats and "expert cache hit ratio" in stats, stats
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        return 0
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        fleet.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--model", "--worker-bin", "--coordinator-bin"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--chromium", default=shutil.which("chromium"))
    parser.add_argument("--chromedriver", default=shutil.which("chromedriver"))
    args = parser.parse_args()
    if not args.chromium or not args.chromedriver:
        print("SKIPPED: chromium and chromedriver are needed (tools/setup.sh installs them)")
        return 77
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
