using System.Collections.Concurrent;
using System.Diagnostics;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>
/// Traces through the real broker with the SDK: a message published inside the producer's span carries its W3C
/// context, the broker records a publish span and a deliver span, and the deliver span is a child of the producer's
/// span, so one trace runs from the producer to the consumer. A message published outside any trace gets the broker's
/// publish span as its context. Spans are collected by an ActivityListener (what an exporter subscribes with).
/// </summary>
[Collection(RunAlone.Name)]
public sealed class TracingTests(SharedBroker shared) : IClassFixture<SharedBroker>, IDisposable
{
    private static readonly ActivitySource Producer = new("Tests.Producer");
    private readonly ConcurrentQueue<Activity> _stopped = new();
    private readonly ActivityListener _listener = new()
    {
        ShouldListenTo = source => source.Name is "Broker.Server" or "Tests.Producer",
        Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
    };

    public void Dispose() => _listener.Dispose();

    [Fact]
    public async Task A_deliver_span_is_a_child_of_the_producers_span_and_an_untraced_message_gets_the_publish_span()
    {
        _listener.ActivityStopped = _stopped.Enqueue;
        ActivitySource.AddActivityListener(_listener);
        string topic = await shared.NewTopicAsync("traced");

        ActivityContext producerContext;
        using (var produce = Producer.StartActivity("enqueue job", ActivityKind.Internal))
        {
            Assert.NotNull(produce);
            producerContext = produce.Context;
            await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("traced")]);
        }
        await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("untraced")]);

        await using var subscription = await shared.Client.SubscribeAsync(topic, "workers");
        var received = await Receive.ExactlyAsync(subscription, 2);
        Assert.Equal(producerContext.TraceId.ToHexString(), ActivityContext.Parse(received[0].Headers["traceparent"], null).TraceId.ToHexString());

        var spans = _stopped.Where(a => a.Tags.Any(t => t.Key == "messaging.destination.name" && t.Value == topic)).ToList();
        var delivered = spans.Where(a => a.OperationName == $"deliver {topic}").ToList();
        Assert.Equal(2, delivered.Count);
        var tracedDelivery = delivered.Single(a => a.TraceId == producerContext.TraceId);
        Assert.Equal(producerContext.SpanId, tracedDelivery.ParentSpanId);
        Assert.Equal(ActivityKind.Consumer, tracedDelivery.Kind);
        Assert.Equal("workers", tracedDelivery.GetTagItem("messaging.consumer.group.name"));

        // The untraced message carries the broker's publish span, and its delivery is that span's child.
        var publishes = spans.Where(a => a.OperationName == $"publish {topic}").ToList();
        Assert.Equal(2, publishes.Count);
        var untracedDelivery = delivered.Single(a => a != tracedDelivery);
        Assert.Contains(publishes, p => p.SpanId == untracedDelivery.ParentSpanId && p.TraceId == untracedDelivery.TraceId);
        Assert.Equal(ActivityContext.Parse(received[1].Headers["traceparent"], null).SpanId, untracedDelivery.ParentSpanId);
    }
}
