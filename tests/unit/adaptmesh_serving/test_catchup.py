"""When the start-up read of the compacted topic counts as caught up."""

from __future__ import annotations

from adaptmesh_serving.catchup import StartupCatchUp


def test_not_ready_before_the_start_up_offsets_are_known() -> None:
    catch_up = StartupCatchUp()
    catch_up.handled(0, 5)
    assert not catch_up.ready


def test_an_empty_or_fully_compacted_log_is_caught_up_at_once() -> None:
    catch_up = StartupCatchUp()
    catch_up.begin({0: 0, 1: 4}, {0: 0, 1: 4})
    assert catch_up.ready


def test_ready_once_the_last_record_of_every_partition_was_handled() -> None:
    catch_up = StartupCatchUp()
    catch_up.begin({0: 0, 1: 0}, {0: 3, 1: 1})
    catch_up.handled(0, 0)
    catch_up.handled(1, 0)
    assert not catch_up.ready
    catch_up.handled(0, 2)
    assert catch_up.ready


def test_records_handled_before_the_offsets_were_known_count() -> None:
    catch_up = StartupCatchUp()
    catch_up.handled(0, 2)
    catch_up.begin({0: 0}, {0: 3})
    assert catch_up.ready


def test_a_tail_the_handler_never_sees_counts_once_the_position_settles() -> None:
    catch_up = StartupCatchUp()
    catch_up.begin({0: 0}, {0: 5})
    catch_up.handled(0, 2)  # records 3 and 4 were dead-lettered: no handler call
    catch_up.observe_positions({0: 5}, handler_busy=False)
    assert not catch_up.ready, "one observation may be a record between fetch and handler"
    catch_up.observe_positions({0: 5}, handler_busy=False)
    assert catch_up.ready


def test_a_busy_handler_or_a_moving_position_is_not_settled() -> None:
    catch_up = StartupCatchUp()
    catch_up.begin({0: 0}, {0: 5})
    catch_up.observe_positions({0: 5}, handler_busy=False)
    catch_up.observe_positions({0: 5}, handler_busy=True)
    catch_up.observe_positions({0: 5}, handler_busy=False)
    assert not catch_up.ready
    catch_up.observe_positions({0: 3}, handler_busy=False)
    catch_up.observe_positions({0: 5}, handler_busy=False)
    assert not catch_up.ready
    catch_up.observe_positions({}, handler_busy=False)
    assert not catch_up.ready
