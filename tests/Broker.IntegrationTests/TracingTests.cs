using System.Diagnostics;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using OpenTelemetry.Trace;

namespace Broker.IntegrationTests;

/// <summary>
/// Traces through the real broker with the SDK: a message published inside the producer's span carries its W3C
/// context, the broker records a publish span and a deliver span, and the deliver span is a child of the producer's
/// span, so one trace runs from the producer to the consumer. A message published outside any trace gets the broker's
/// publish span as its context. Spans go through OpenTelemetry's SDK (sampler, processor, exporter) into an
/// in-memory exporter, the pipeline the broker's OTLP exporter uses, and the links are checked on what was exported.
/// </summary>
[Collection(RunAlone.Name)]
public sealed class TracingTests : IClassFixture<SharedBroker>, IDisposable
{
    private static readonly ActivitySource Producer = new("Tests.Producer");
    private readonly SharedBroker shared;
    private readonly ExportedSpans _exported = new();
    private readonly TracerProvider _tracing;

    public TracingTests(SharedBroker shared)
    {
        this.shared = shared;
        // Every span is sampled, as a parent-based sampler does for a sampled producer and for the broker's own roots.
        _tracing = OpenTelemetry.Sdk.CreateTracerProviderBuilder()
            .AddSource("Broker.Server", Producer.Name)
            .SetSampler(new AlwaysOnSampler())
            .AddInMemoryExporter(_exported)
            .Build()!;
    }

    public void Dispose() => _tracing.Dispose();

    /// <summary>The exporter adds on the threads that end spans while the test reads: a list behind a lock.</summary>
    private sealed class ExportedSpans : System.Collections.ObjectModel.Collection<Activity>
    {
        protected override void InsertItem(int index, Activity item)
        {
            lock (this)
                base.InsertItem(index, item);
        }

        public List<Activity> Snapshot()
        {
            lock (this)
                return [.. this];
        }
    }

    [Fact]
    public async Task A_deliver_span_is_a_child_of_the_producers_span_and_an_untraced_message_gets_the_publish_span()
    {
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

        Assert.True(_tracing.ForceFlush(5000));
        var spans = _exported.Snapshot().Where(a => a.Tags.Any(t => t.Key == "messaging.destination.name" && t.Value == topic)).ToList();
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
