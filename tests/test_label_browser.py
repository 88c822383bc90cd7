"""The labelling page of `edgecls label` in headless Chromium (Selenium, Debian's chromium): select images with the
keyboard and with shift-click, assign a new and an existing class, discard, see a refused class name; the folder
written is checked on disk."""
from __future__ import annotations

import json
import time

import pytest
from test_browser import browser, wait_for  # noqa: F401 (the headless Chromium fixture)
from test_label import make_collection

from edgecls.runtime.label.server import LabelApp
from edgecls.runtime.label.store import LabelStore


@pytest.fixture
def page(browser, tmp_path):  # noqa: F811
    col = make_collection(tmp_path / "col")
    app = LabelApp(LabelStore(col), "127.0.0.1", 0)
    browser.get(app.url)
    wait_for(lambda: len(browser.find_elements("css selector", ".item")) == 12, what="12 images on the page")
    yield browser, col
    app.close()


def keys(driver, *ks):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*ks).perform()


def shown_ids(driver):
    return [e.get_attribute("data-id") for e in driver.find_elements("css selector", ".item")]


def labels(col):
    return json.loads((col / "labels.json").read_text()) if (col / "labels.json").exists() else {"labels": {}}


def test_keyboard_select_new_class_existing_class_discard(page):
    from selenium.webdriver.common.keys import Keys

    d, col = page
    ids = shown_ids(d)
    groups = [e.text for e in d.find_elements("css selector", "section.group h2")]
    assert groups[0].startswith("model said: cup · ") and len(groups) == 4
    # Space selects the focused image, → moves, Shift+→ extends: the first three images
    from selenium.webdriver.common.action_chains import ActionChains

    keys(d, Keys.SPACE, Keys.ARROW_RIGHT, Keys.SPACE)
    ActionChains(d).key_down(Keys.SHIFT).send_keys(Keys.ARROW_RIGHT).key_up(Keys.SHIFT).perform()
    wait_for(lambda: d.find_element("id", "selected").text == "3 selected", what="3 selected")
    keys(d, "n")
    wait_for(lambda: d.switch_to.active_element.get_attribute("id") == "new-class", what="new-class input focused")
    keys(d, "teapot", Keys.ENTER)
    wait_for(lambda: (col / "labelled" / "teapot").is_dir() and len(list((col / "labelled" / "teapot").iterdir())) == 3,
             what="labelled/teapot/ with 3 images")
    assert sorted(p.stem for p in (col / "labelled" / "teapot").iterdir()) == sorted(ids[:3])
    wait_for(lambda: len(shown_ids(d)) == 9, what="the 3 labelled images leave the pending view")
    assert "teapot (3)" in d.find_element("id", "classes").text
    # number key 2 assigns the focused image (nothing selected) to the second class, lamp
    focused = d.find_element("css selector", ".item.focused").get_attribute("data-id")
    keys(d, "2")
    wait_for(lambda: labels(col)["labels"].get(focused) == "lamp", what="focused image → lamp")
    assert (col / "labelled" / "lamp" / f"{focused}.jpg").is_file()
    # click, then shift-click: a range of three; x discards them
    wait_for(lambda: len(shown_ids(d)) == 8, what="8 pending")
    items = d.find_elements("css selector", ".item")
    items[2].click()
    ActionChains(d).key_down(Keys.SHIFT).click(items[4]).key_up(Keys.SHIFT).perform()
    wait_for(lambda: d.find_element("id", "selected").text == "3 selected", what="shift-click range of 3")
    chosen = [e.get_attribute("data-id") for e in items[2:5]]
    keys(d, "x")
    wait_for(lambda: sorted(labels(col).get("discarded", [])) == sorted(chosen), what="3 discarded")
    # the file is written before the answer reaches the page, which then redraws its counts
    wait_for(lambda: "5 to label · 4 labelled · 3 discarded" in d.find_element("id", "counts").text,
             what="the page's counts after the discard")


def test_a_refused_class_name_is_shown_and_nothing_is_written(page):
    from selenium.webdriver.common.keys import Keys

    d, col = page
    keys(d, Keys.SPACE, "n")
    wait_for(lambda: d.switch_to.active_element.get_attribute("id") == "new-class", what="new-class input focused")
    keys(d, "../evil", Keys.ENTER)
    msg = wait_for(lambda: d.find_element("id", "message").text, what="an error message")
    assert "refused" in msg and "no path separator" in msg
    assert "error" in d.find_element("id", "message").get_attribute("class")
    time.sleep(0.2)
    assert not (col / "labelled").exists() and not (col.parent / "evil").exists()
    assert len(shown_ids(d)) == 12
