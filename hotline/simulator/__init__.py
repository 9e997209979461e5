"""`hotline simulate`: evaluators, operators, departments and callback staff played against
the public HTTP APIs, with the rates they should produce checked against `/rates`.

- `params`: every calibrated figure, its default and where it comes from;
- `model`: one ticket's whole story, generated from a seed (pure);
- `truth`: the rates expected from what was actually sent (the DESIGN.md definitions);
- `driver`: the stories played over HTTP, at a rate, with retries and back-dating;
- `report`: expected and reported side by side, as a table or JSON.
"""
