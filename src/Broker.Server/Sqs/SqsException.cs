using Broker.Storage.Errors;

namespace Broker.Server.Sqs;

/// <summary>
/// An SQS error as the SDKs expect it: the query protocol's code (<c>AWS.SimpleQueueService.NonExistentQueue</c>), the
/// JSON protocol's type (<c>QueueDoesNotExist</c>), the HTTP status, and whether the caller is at fault.
/// </summary>
internal sealed partial class SqsException(string queryCode, string jsonType, string message, int httpStatus = 400, bool senderFault = true)
    : Exception(message)
{
    public string QueryCode { get; } = queryCode;
    public string JsonType { get; } = jsonType;
    public int HttpStatus { get; } = httpStatus;
    public bool SenderFault { get; } = senderFault;

    public static SqsException NonExistentQueue(string queue) =>
        new("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", $"The specified queue '{queue}' does not exist.");

    public static SqsException QueueNameExists(string queue) =>
        new("QueueAlreadyExists", "QueueNameExists", $"A queue named '{queue}' already exists with different attributes.");

    public static SqsException InvalidParameter(string message) =>
        new("InvalidParameterValue", "InvalidParameterValue", message);

    public static SqsException MissingParameter(string name) =>
        new("MissingParameter", "MissingParameter", $"The request must contain the parameter {name}.");

    public static SqsException InvalidAttributeName(string name) =>
        new("InvalidAttributeName", "InvalidAttributeName", $"Unknown or unsupported attribute {name}.");

    public static SqsException ReceiptHandleIsInvalid(string why) =>
        new("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", $"The receipt handle is not valid: {why}.");

    public static SqsException InvalidAction(string action) =>
        new("InvalidAction", "InvalidAction", $"The action {action} is not valid for this endpoint.");

    public static SqsException Unsupported(string what) =>
        new("AWS.SimpleQueueService.UnsupportedOperation", "UnsupportedOperation", $"{what} is not supported by this broker yet.");

    public static SqsException EmptyBatch() =>
        new("AWS.SimpleQueueService.EmptyBatchRequest", "EmptyBatchRequest", "There should be at least one entry in the request.");

    public static SqsException TooManyEntries(int count) =>
        new("AWS.SimpleQueueService.TooManyEntriesInBatchRequest", "TooManyEntriesInBatchRequest",
            $"Maximum number of entries per request are 10. You have sent {count}.");

    public static SqsException BatchIdsNotDistinct(string id) =>
        new("AWS.SimpleQueueService.BatchEntryIdsNotDistinct", "BatchEntryIdsNotDistinct", $"Id {id} repeated.");

    public static SqsException InvalidBatchEntryId(string id) =>
        new("AWS.SimpleQueueService.InvalidBatchEntryId", "InvalidBatchEntryId",
            $"A batch entry id can only contain alphanumeric characters, hyphens and underscores, up to 80: '{id}'.");

    public static SqsException InvalidMessageContents(string why) =>
        new("InvalidMessageContents", "InvalidMessageContents", why);

    public static SqsException ServiceUnavailable(string why) =>
        new("ServiceUnavailable", "ServiceUnavailable", why, 503, senderFault: false);

    public static SqsException MissingAuthentication() =>
        new("MissingAuthenticationToken", "MissingAuthenticationToken",
            "Requests must be signed with AWS Signature Version 4 (an Authorization: AWS4-HMAC-SHA256 header, as every AWS SDK sends, or a presigned URL).",
            403);

    // The refusals of SqsSignatures, with AWS's codes and statuses (its "Common Errors" of the query API), so the SDKs
    // report them as they would AWS's. The JSON protocol's type is the same code: the SDKs read it from
    // x-amzn-query-error anyway.

    /// <summary>The access key id is unknown to the broker (or the key was not made for SQS).</summary>
    public static SqsException InvalidClientToken(string message) =>
        new("InvalidClientTokenId", "InvalidClientTokenId", message, 403);

    /// <summary>The signature is not the one the key's secret gives for this request.</summary>
    public static SqsException SignatureDoesNotMatch(string message) =>
        new("SignatureDoesNotMatch", "SignatureDoesNotMatch", message, 403);

    /// <summary>The Authorization header or presigned URL lacks a part, or has one in the wrong form.</summary>
    public static SqsException IncompleteSignature(string message) =>
        new("IncompleteSignature", "IncompleteSignature", message);

    /// <summary>The request's time is too far from the broker's clock, or a presigned URL has expired.</summary>
    public static SqsException RequestExpired(string message) =>
        new("RequestExpired", "RequestExpired", message);

    /// <summary>The key is valid but its grants do not allow the action on this queue.</summary>
    public static SqsException AccessDenied(string message) =>
        new("AccessDenied", "AccessDenied", message, 403);

    /// <summary>
    /// A broker error as the SQS error the catalogue names for it (proto/broker/v1/errors.json, generated into
    /// <see cref="KindOf"/>): unavailable states are 503, which the SDKs retry.
    /// </summary>
    public static SqsException From(BrokerException error, string queue) => KindOf(error.Code) switch
    {
        "NonExistentQueue" => NonExistentQueue(queue),
        "AccessDenied" => AccessDenied(error.Message),
        "InvalidParameterValue" when error.Code == BrokerErrorCode.InvalidName => InvalidParameter($"Invalid queue name '{queue}': {error.Message}"),
        "InvalidParameterValue" => InvalidParameter(error.Message),
        "ServiceUnavailable" => ServiceUnavailable(error.Message),
        _ => Internal(error.Message),
    };

    public static SqsException Internal(string why) =>
        new("InternalError", "InternalError", why, 500, senderFault: false);
}
