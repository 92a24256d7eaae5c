namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// Test classes in this collection run after the parallel ones, one at a time: their assertions follow a shutdown's
/// phases on the wire, and with every other class's brokers busy on the same two cores they failed about one full run
/// in three (a drained stream's connection closed before the client read its last answer; not reproduced alone or
/// with moderate load). Tracked in the issue notes until the cause is found.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class RunAlone
{
    public const string Name = "run alone";
}
