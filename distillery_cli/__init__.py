"""The `distillery` command.

Client commands (`run`, `jobs`, `models`, `datasets`) talk to a running service through distillery_client and
need only `pip install distillery`. Server commands (`up`, `api`, `worker`, `migrate`, `keys`, `distill`,
`example`, `webhooks secret`) import app/ and worker/ inside the command and, without `distillery[server]`,
exit 2 saying so.

    cli                the typer app and main()
    server_commands    migrate, worker, api, keys, distill, example     up_command  up, and worker_processes
    run_command        run: files -> distilled student                  hyper_options  run's hyperparameter flags
    job_commands       jobs ...      upload_commands  models ..., datasets ...      webhook_commands  webhooks ...
    output, tables, progress, downloads, options, server_extra: what the commands share
"""
