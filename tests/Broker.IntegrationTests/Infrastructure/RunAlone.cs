namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// Test classes in this collection run after the parallel ones, one at a time: the shutdown tests follow a drain's
/// phases on the wire, with timing that other classes' brokers on the same two cores disturb; the tracing test listens
/// to every in-process broker's spans, and a listener makes brokers add trace headers to messages other tests publish.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class RunAlone
{
    public const string Name = "run alone";
}
