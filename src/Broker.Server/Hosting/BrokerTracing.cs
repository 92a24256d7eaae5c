using System.Diagnostics;
using Broker.Storage.Topics;

namespace Broker.Server.Hosting;

/// <summary>
/// Traces, after OpenTelemetry's messaging conventions: a <c>publish</c> span per publish call and a <c>deliver</c>
/// span per message handed to a consumer, linked through the W3C trace context a message carries in its headers
/// (<c>traceparent</c>, <c>tracestate</c>): the producer's SDK puts its own there, and the broker puts its publish
/// span's there for a message that has none. A deliver span is a child of that context, so a trace runs from the
/// producer's code through the broker to the consumer that processed the message. Nothing is recorded, and no header
/// added, unless something listens to <see cref="SourceName"/> (the OTLP exporter, when configured, or a test).
/// </summary>
internal static class BrokerTracing
{
    public const string SourceName = "Broker.Server";
    public const string TraceParent = "traceparent";
    public const string TraceState = "tracestate";

    public static readonly ActivitySource Source = new(SourceName);

    /// <summary>A publish span for a batch of <paramref name="count"/> messages to <paramref name="topic"/>, or null when nobody listens.</summary>
    public static Activity? StartPublish(string topic, int count)
    {
        var activity = Source.StartActivity($"publish {topic}", ActivityKind.Producer);
        activity?.SetTag("messaging.system", "broker");
        activity?.SetTag("messaging.operation.type", "publish");
        activity?.SetTag("messaging.destination.name", topic);
        activity?.SetTag("messaging.batch.message_count", count);
        return activity;
    }

    /// <summary>Messages without a trace context of their own get <paramref name="publish"/>'s.</summary>
    public static AppendMessage[] WithTraceContext(AppendMessage[] messages, Activity publish)
    {
        for (int i = 0; i < messages.Length; i++)
        {
            if (messages[i].Headers.Any(h => h.Key == TraceParent))
                continue;
            var headers = new List<KeyValuePair<string, string>>(messages[i].Headers) { new(TraceParent, publish.Id!) };
            if (publish.TraceStateString is { Length: > 0 } state)
                headers.Add(new(TraceState, state));
            messages[i] = messages[i] with { Headers = headers };
        }
        return messages;
    }

    /// <summary>A deliver span for one message handed to a consumer of <paramref name="group"/>, a child of the message's trace context.</summary>
    public static void RecordDeliver(string topic, string group, StoredMessage message, int attempt)
    {
        string? parent = null, state = null;
        foreach (var (name, value) in message.Headers)
        {
            if (name == TraceParent)
                parent = value;
            else if (name == TraceState)
                state = value;
        }
        ActivityContext.TryParse(parent, state, out var context);
        using var activity = Source.StartActivity($"deliver {topic}", ActivityKind.Consumer, context);
        activity?.SetTag("messaging.system", "broker");
        activity?.SetTag("messaging.operation.type", "deliver");
        activity?.SetTag("messaging.destination.name", topic);
        activity?.SetTag("messaging.consumer.group.name", group);
        activity?.SetTag("messaging.message.id", message.Offset);
        activity?.SetTag("messaging.delivery.attempt", attempt);
    }
}
