"""The web view in a real headless Chromium (Debian's chromium and chromium-driver, driven by python3-selenium),
against a broker with traffic: what it shows, peek, and the redrive button."""
import shutil
import uuid

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from broker_client import Consumer, Producer

from .broker_process import DEADLINE, BrokerTestCase
from .test_client import describe


def chromium():
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium")
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


class WebViewTest(BrokerTestCase):
    def setUp(self):
        self.browser = chromium()
        self.addCleanup(self.browser.quit)
        # The page redraws its tables every two seconds: an element found just before a redraw is gone a moment later
        # (stale), and one looked for during it is not there yet; either way the wait looks again.
        self.wait = WebDriverWait(self.browser, DEADLINE, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))

    def text_of(self, selector):
        """The text of the element, once it exists (the page polls the broker every two seconds)."""
        return self.wait.until(lambda browser: browser.find_elements(By.CSS_SELECTOR, selector) or False)[0].text

    def test_the_page_shows_backlog_and_dead_letters_then_peeks_and_redrives_them(self):
        topic = "web-%s" % uuid.uuid4().hex[:8]
        with Producer([self.broker.address]) as producer:
            for i in range(10):
                producer.send(topic, {"item": i})
        with Consumer(topic, "workers", [self.broker.address], max_in_flight=5) as consumer:
            taken = consumer.batch(5, DEADLINE)
            while len(taken) < 5:
                taken += consumer.batch(5 - len(taken), DEADLINE)
            consumer.ack(taken[:3])
            consumer.nack(taken[3:], dead_letter=True, reason="price missing")

        self.browser.get(self.broker.http_address + "/ui/")
        group = 'tr[data-topic="%s"][data-group="workers"]' % topic
        self.wait.until(lambda browser: browser.find_elements(By.CSS_SELECTOR, group + " td.dead")
                        and browser.find_element(By.CSS_SELECTOR, group + " td.dead").text == "2")
        self.assertEqual("5", self.text_of(group + " td.backlog"))
        self.assertIn("warn", self.browser.find_element(By.CSS_SELECTOR, group).get_attribute("class"))
        self.assertTrue(self.browser.find_elements(By.CSS_SELECTOR, 'tr[data-topic="%s"] svg.spark' % topic))
        dead = 'tr[data-topic="%s.dlq"]' % topic
        self.assertEqual("2", self.text_of(dead + " td.waiting"))

        self.browser.find_element(By.CSS_SELECTOR, dead + " button.peek").click()
        headers = self.wait.until(lambda browser: browser.find_elements(By.CSS_SELECTOR, "#peek-messages td.headers") or False)
        self.assertEqual(2, len(headers))
        self.assertIn("broker-dlq-reason", headers[0].text)
        self.assertIn("price missing", headers[0].text)
        self.assertIn('{"item": 3}', self.browser.find_element(By.CSS_SELECTOR, "#peek-messages pre").text)

        self.browser.find_element(By.CSS_SELECTOR, dead + " button.redrive").click()
        self.wait.until(lambda browser: "2 moved" in browser.find_element(By.ID, "status").text)
        self.assertEqual(12, describe(self.broker.address, topic).next_offset)  # back in their topic
        self.wait.until(lambda browser: browser.find_element(By.CSS_SELECTOR, dead + " td.waiting").text == "0")
