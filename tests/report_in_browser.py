"""Opens an HTML report in headless Chromium (the system's, driven by Playwright) and checks it.

usage: report_in_browser.py REPORT.html SCREENSHOT.png [TEXT_THAT_MUST_SHOW ...]

Fails (exit 1, one line per problem) on a console error, an uncaught page error, a request
that failed (the report must need no network), an image that did not load, any <script>
element, or a TEXT that is not on the page as text. First proves on a control page that a
broken image and a console error are caught, so a silent checker cannot pass. Prints a JSON
summary; saves a full-page screenshot.
"""
import json
import os
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def inspect(browser, url):
    problems = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:120]}"))
    page.goto(url, wait_until="load")
    facts = page.evaluate(
        """() => ({
            images: document.images.length,
            broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length,
            scripts: document.querySelectorAll('script').length,
            svgs: document.querySelectorAll('svg').length,
            sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
            text: document.body.textContent,
            height: document.body.scrollHeight,
        })"""
    )
    if facts["broken"]:
        problems.append(f"{facts['broken']} of {facts['images']} images did not load")
    if facts["scripts"]:
        problems.append(f"{facts['scripts']} <script> elements")
    return page, facts, problems


def main():
    report, screenshot, *texts = sys.argv[1:]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        control = os.path.join(os.path.dirname(os.path.abspath(screenshot)), "control.html")
        with open(control, "w") as f:
            f.write('<img src="data:image/png;base64,AAAA"><img src="data:image/png;base64,'
                    'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==">'
                    '<img onerror="console.error(\'caught\')" src="data:,">')
        _, facts, problems = inspect(browser, "file://" + control)
        if facts["broken"] != 2 or not any("caught" in p for p in problems):
            print(f"the checker missed a broken image or a console error on its control page: {facts['broken']} broken, {problems}")
            return 1
        page, facts, problems = inspect(browser, "file://" + os.path.abspath(report))
        for text in texts:
            if text not in facts["text"]:
                problems.append(f"not shown as text: {text!r}")
        page.screenshot(path=screenshot, full_page=True)
        browser.close()
    summary = {k: v for k, v in facts.items() if k != "text"}
    print(json.dumps(summary))
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
