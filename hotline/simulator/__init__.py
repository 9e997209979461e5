"""`hotline simulate`: evaluators, operators, departments and callback staff played against
the public HTTP APIs of intake, dispatch and followup, with the rates they should produce
checked against `/rates`.

Two ways to run:

- a comparison run (`run.simulate`): N tickets back-dated into a window of their own in the
  past (a few days, 60 to 400 days ago, chosen from the run id), so every deadline has
  passed and no other traffic shares the window; then `/rates` for that window is polled
  until it equals what the run expects (`truth`), or the settle timeout passes;
- a live run (`live.simulate_live`): tickets submitted now, their steps a few real seconds
  apart, until stopped; a one-line summary now and then.

The modules, each importing only those listed before it:

- `params`: every calibrated figure, its default and where it comes from;
- `model`: one ticket's whole story, generated from a seed (pure);
- `truth`: the rates expected from what was actually sent (the DESIGN.md definitions);
- `client`: where the services answer, their HTTP clients and errors, `/healthz`, `/rates`;
- `config`: what a run is asked to do (`RunConfig`) and its id;
- `comparison`: expected rates beside reported ones, compared;
- `window`: the past window a comparison run fills, chosen so no other run shares it;
- `results`: what a comparison run sent, expected and read back (`RunResult`);
- `report`: a run's result as a table or JSON;
- `players`: the stories played over HTTP, with retries and back-dating; the request bodies;
- `pacing`: stories started at a rate, a bounded number in flight;
- `live`: the live run;
- `run`: the comparison run, and the entry point of both;
- `command`: the typer command.
"""
