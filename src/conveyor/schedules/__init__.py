"""Schedules: submit a kind at the times of a cron expression (in a time zone) or every N
seconds, exactly once per tick however many processes run the ticker.

`model` (what a schedule is), `timing` (when it fires), `declare` (schedules in code),
`service` (create, change, pause, preview), `ticker` (the loop that submits the jobs).
"""
