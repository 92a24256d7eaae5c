namespace Broker.Client;

/// <summary>
/// The application's work for one message, run by a <see cref="BrokerWorkerPool{THandler}"/> in a DI scope of its own.
/// Returning acknowledges the message (unless the handler settled it itself); throwing nacks it with the pool's retry
/// delay. Its cancellation token fires only when the host's shutdown timeout runs out: then the message is
/// released (it comes back).
/// </summary>
public interface IBrokerMessageHandler
{
    /// <summary>Handles one message.</summary>
    /// <param name="message">The message; its lease is extended while this runs.</param>
    /// <param name="cancellationToken">Fires when the host stops waiting for running handlers.</param>
    Task HandleAsync(BrokerMessage message, CancellationToken cancellationToken);
}
