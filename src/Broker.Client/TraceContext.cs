using System.Diagnostics;

namespace Broker.Client;

/// <summary>
/// Carries the caller's trace into the message: with an <see cref="Activity"/> current when a message is made, its W3C
/// context goes into the headers <c>traceparent</c> and <c>tracestate</c> (unless the message has its own), so the
/// broker's deliver span, and the consumer's work, join the producer's trace.
/// </summary>
internal static class TraceContext
{
    public static void Inject(Protocol.V1.Message message)
    {
        if (Activity.Current is not { IdFormat: ActivityIdFormat.W3C, Id: { } id } current || message.Headers.ContainsKey("traceparent"))
            return;
        message.Headers["traceparent"] = id;
        if (current.TraceStateString is { Length: > 0 } state)
            message.Headers["tracestate"] = state;
    }
}
