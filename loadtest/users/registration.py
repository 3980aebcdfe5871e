"""Registration opening: enrol, sign, confirm (reviewed), waiting room, seat, order, pay at the simulator, paid."""

from __future__ import annotations

import time

import gevent
from locust import task
from locust.exception import RescheduleTask

from loadtest.users.enrolment import EnrollingUser, Order

PAID_WAIT_S = 30.0  # from paying to seeing the registration paid: the simulator notifies at once
PAID_POLL_S = 0.5


class RegistrationUser(EnrollingUser):
    """A candidate on the day registration opens, from sign-in to an admission ticket number."""

    weight = 2

    @task
    def register_and_pay(self) -> None:
        """One candidate's whole registration; the next iteration is the next candidate."""
        if not self.sign_in():
            return
        try:
            order = self.enrol_to_order()
            if order is not None:
                self.think()
                self.pay_at_simulator(order)
                self.wait_until_paid(order)
        except RescheduleTask:
            self.sign_out()
            raise
        self.sign_out()

    def pay_at_simulator(self, order: Order) -> None:
        """Press the pay button of the provider's page (the simulator then notifies the gateway)."""
        provider_url = order.pay_url.rsplit("/pay/", 1)[0]
        answer = self.call("POST", f"{provider_url}/sim/orders/{order.order_no}/pay",
                           name="paysim /sim/orders/{order_no}/pay", due=(202,),
                           fields=("order_no", "trade_no", "notifications"), json_body={})
        if not answer.due:
            self.abort()

    def wait_until_paid(self, order: Order) -> None:
        """Poll the registration, as its page does, until it is paid with a ticket number."""
        started = time.perf_counter()
        while True:
            answer = self.call("GET", f"/api/v1/registrations/{order.registration_id}",
                               name="/api/v1/registrations/{id}", fields=("registration_id", "status", "ticket_no"),
                               headers=self.headers())
            if not answer.due:
                self.abort()
            status = answer.body["status"]
            if status == "paid" and answer.body["ticket_no"]:
                return
            if status not in ("approved", "paid"):
                self.flow_failed("registration paid after paying", f"the registration went {status}", started)
                self.abort()
            if time.perf_counter() - started > PAID_WAIT_S:
                self.flow_failed("registration paid after paying", f"not paid within {PAID_WAIT_S:g} s", started)
                self.abort()
            gevent.sleep(PAID_POLL_S)
