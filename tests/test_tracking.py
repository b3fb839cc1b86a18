"""The MLflow side on its own: a sweep's runs are read page by page, so none is lost past one page."""

from fairsweep.metrics.values import safe_key
from fairsweep.tracking import PARENT_TAG, ROLE_TAG, TRIAL_TAG, Tracker, curve_key


def test_child_runs_are_read_past_one_page_and_only_finished_trials_count(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "paging")
    parent = tracker.client.create_run(tracker.experiment_id, tags={ROLE_TAG: "sweep"}).info.run_id
    children = []
    for i in range(5):
        run = tracker.client.create_run(tracker.experiment_id, tags={PARENT_TAG: parent, ROLE_TAG: "trial",
                                                                     TRIAL_TAG: f"trial-{i}"})
        children.append(run.info.run_id)
        if i < 4:  # the last one is left RUNNING, as a killed driver leaves it
            tracker.client.set_terminated(run.info.run_id, "FINISHED")
    assert sorted(r.info.run_id for r in tracker.child_runs(parent, page=2)) == sorted(children)
    assert len(tracker.client.search_runs([tracker.experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'",
                                          max_results=2)) == 2  # what one page would have given
    done = tracker.finished_trials(parent)
    assert done == {f"trial-{i}": children[i] for i in range(4)}
    assert tracker.client.get_run(children[4]).info.lifecycle_stage == "deleted"


def test_a_per_group_curve_is_logged_under_the_group_key():
    assert curve_key("multiplier/a b") == f"multiplier/{safe_key('a b')}" != curve_key("multiplier/a_b")
    assert curve_key("multiplier/a/b") == f"multiplier/{safe_key('a/b')}" and curve_key("loss") == "loss"


def test_verbose_lets_ray_forward_the_workers_output(monkeypatch):
    import logging

    from fairsweep.sweep.ray_session import VERBOSE_ENV, ray_logging

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    assert ray_logging() == {"logging_level": logging.WARNING, "log_to_driver": False}
    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert ray_logging() == {"logging_level": logging.INFO, "log_to_driver": True}


def test_the_ray_token_is_made_readable_by_its_owner_only(tmp_path):
    from fairsweep.sweep.ray_session import private_token

    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)  # as Ray writes it
    private_token(token)
    assert token.stat().st_mode & 0o777 == 0o600
    private_token(tmp_path / "missing")  # no token: nothing to do, no error
