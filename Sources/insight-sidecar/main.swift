import Sidecar

await InsightCommand.entry()
