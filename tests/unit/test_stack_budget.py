"""When `hotline up` recycles the embedded broker."""

import pytest

from hotline.stack import over_budget


@pytest.mark.parametrize(
    ("rss", "budget", "fresh", "recycle"),
    [
        (900, 1024, 15, False),  # under budget
        (1100, 1024, 15, True),  # over budget, far above its fresh size
        (40, 32, 25, False),  # over a budget set too low: would recycle forever
        (60, 32, 25, True),  # ... until it has really grown
    ],
)
def test_the_broker_is_recycled_only_over_budget_and_once_it_has_grown(rss, budget, fresh, recycle):
    assert over_budget(rss, budget_mb=budget, fresh_mb=fresh) is recycle
