"""The processors: raw topics in, ordered topics out, exact across kill -9 (docs/DESIGN.md, "Processors").

Pure rules (`reorder`, `gaps`, `utterances`, `lanes`, `meetings`), their shell (`batch_loop`, `outbox`,
`state`) and the Faust app (`app`) that runs them as `rtmsflow process`."""
