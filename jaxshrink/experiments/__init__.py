"""The experiments: one module each (`single`, `sweep`, `correlation`, `relearn`,
`depth`), registered in `registry` and run by `runner.run` (`jaxshrink.run`)."""
