"""Each task's restoring hooks for `restore.pipeline` (prepare / forward / finish, typed options, demo).

The training side of a task lives in `restore.tasks`; these modules hold only
what restoring needs, so the CLI, the API and the app import no training code
beyond the shared colour and mask helpers.
"""
