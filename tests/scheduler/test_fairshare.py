"""Recent service decays exponentially with age, per user and per tenant (pure)."""

from __future__ import annotations

import pytest

from inference.scheduler import decayed_service, estimated_gpu_seconds


def test_a_charge_counts_in_full_now_and_halves_each_half_life() -> None:
    users, tenants = decayed_service(
        [(1, 10, 8.0, 1000.0), (2, 10, 8.0, 900.0), (3, 20, 8.0, 800.0)], now=1000.0, half_life_s=100.0
    )
    assert users[1] == pytest.approx(8.0)
    assert users[2] == pytest.approx(4.0)
    assert users[3] == pytest.approx(2.0)
    assert tenants == pytest.approx({10: 12.0, 20: 2.0})


def test_charges_of_one_user_add_up_and_users_are_kept_apart() -> None:
    charges = [(1, 10, 1.0, 50.0), (1, 10, 2.0, 50.0), (2, 11, 5.0, 50.0)]
    users, tenants = decayed_service(charges, now=50.0, half_life_s=30.0)
    assert users == pytest.approx({1: 3.0, 2: 5.0})
    assert tenants == pytest.approx({10: 3.0, 11: 5.0})


def test_old_service_fades_towards_nothing() -> None:
    users, _ = decayed_service([(1, 10, 100.0, 0.0)], now=10 * 300.0, half_life_s=300.0)
    assert users[1] == pytest.approx(100.0 / 1024)


def test_a_charge_dated_in_the_future_counts_in_full() -> None:
    users, _ = decayed_service([(1, 10, 4.0, 1010.0)], now=1000.0, half_life_s=100.0)
    assert users[1] == pytest.approx(4.0)


def test_no_charges_no_service() -> None:
    assert decayed_service([], now=0.0, half_life_s=1.0) == ({}, {})


def test_half_life_must_be_positive() -> None:
    with pytest.raises(ValueError):
        decayed_service([(1, 1, 1.0, 0.0)], now=0.0, half_life_s=0.0)


def test_estimated_cost_grows_with_steps_pixels_and_images() -> None:
    base = estimated_gpu_seconds(steps=20, pixels=512 * 512, images=1)
    assert base > 0
    assert estimated_gpu_seconds(steps=40, pixels=512 * 512, images=1) == pytest.approx(2 * base)
    assert estimated_gpu_seconds(steps=20, pixels=1024 * 1024, images=1) == pytest.approx(4 * base)
    assert estimated_gpu_seconds(steps=20, pixels=512 * 512, images=3) == pytest.approx(3 * base)
